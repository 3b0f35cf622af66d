#include "readArguments.h"

#include <cmath>

#include "mixz/common/error.h"

namespace mixz::addon {

namespace {

const char* typedArrayName(napi_typedarray_type type) {
    switch (type) {
        case napi_int8_array: return "an Int8Array";
        case napi_uint8_array: return "a Uint8Array";
        case napi_uint8_clamped_array: return "a Uint8ClampedArray";
        case napi_int16_array: return "an Int16Array";
        case napi_uint16_array: return "a Uint16Array";
        case napi_int32_array: return "an Int32Array";
        case napi_uint32_array: return "a Uint32Array";
        case napi_float32_array: return "a Float32Array";
        case napi_float64_array: return "a Float64Array";
        case napi_bigint64_array: return "a BigInt64Array";
        case napi_biguint64_array: return "a BigUint64Array";
    }
    return "a typed array";
}

}  // namespace

std::string describe(const Napi::Value& value) {
    if (value.IsNumber()) {
        const double number = value.As<Napi::Number>().DoubleValue();
        // Whole numbers in full (2147483648, not 2.14748e+09); others as the stream prints them.
        if (std::trunc(number) == number && std::fabs(number) < 1e15) return detail::concat(static_cast<long long>(number));
        return detail::concat(number);
    }
    if (value.IsString()) return "\"" + value.As<Napi::String>().Utf8Value() + "\"";
    if (value.IsUndefined()) return "undefined";
    if (value.IsNull()) return "null";
    if (value.IsBoolean()) return "a boolean";
    if (value.IsBigInt()) return "a bigint";
    if (value.IsTypedArray()) return typedArrayName(value.As<Napi::TypedArray>().TypedArrayType());
    if (value.IsArray()) return "an array";
    if (value.IsFunction()) return "a function";
    if (value.IsObject()) return "an object";
    return "a symbol";
}

std::int64_t integerIn(const Napi::Value& value, const std::string& what, std::int64_t min, std::int64_t max) {
    if (value.IsNumber()) {
        const double number = value.As<Napi::Number>().DoubleValue();
        if (std::isfinite(number) && std::trunc(number) == number && number >= static_cast<double>(min) &&
            number <= static_cast<double>(max)) {
            return static_cast<std::int64_t>(number);
        }
    }
    MIXZ_THROW(InvalidArgument, what, " must be an integer in [", min, ", ", max, "], got ", describe(value));
}

void expectArguments(const Napi::CallbackInfo& info, const char* signature, std::size_t count) {
    if (info.Length() != count) {
        MIXZ_THROW(InvalidArgument, signature, " takes ", count, count == 1 ? " argument" : " arguments", ", got ",
                   info.Length());
    }
}

Napi::Object objectArgument(const Napi::Value& value, const std::string& what) {
    if (!value.IsObject() || value.IsArray() || value.IsFunction() || value.IsTypedArray()) {
        MIXZ_THROW(InvalidArgument, what, " must be an object, got ", describe(value));
    }
    return value.As<Napi::Object>();
}

std::string stringField(const Napi::Object& object, const char* key, const std::string& what) {
    const Napi::Value value = object.Get(key);
    if (!value.IsString()) MIXZ_THROW(InvalidArgument, what, ".", key, " must be a string, got ", describe(value));
    return value.As<Napi::String>().Utf8Value();
}

}  // namespace mixz::addon

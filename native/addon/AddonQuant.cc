#include "AddonQuant.h"

#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "PromiseWorker.h"
#include "convertError.h"
#include "readArguments.h"
#include "mixz/common/error.h"
#include "mixz/quant/benchmark.h"
#include "mixz/quant/block_quant.h"
#include "mixz/tensor/dtype.h"
#include "mixz/tensor/simd.h"

namespace mixz::addon {
namespace {

using tensor::DType;
using tensor::Simd;

// Element counts are JS numbers: integers up to 2^53 - 1.
constexpr std::int64_t kMaxSafeInteger = (std::int64_t{1} << 53) - 1;

std::size_t sizeIn(const Napi::Value& value, const std::string& what, std::int64_t max = kMaxSafeInteger) {
    return static_cast<std::size_t>(integerIn(value, what, 0, max));
}

DType floatTypeField(const Napi::Object& object, const char* key, const std::string& what) {
    const std::string name = stringField(object, key, what);
    const std::optional<DType> type = tensor::parseDType(name);
    if (!type || !tensor::isFloatingPoint(*type)) {
        MIXZ_THROW(InvalidArgument, what, ".", key, " must be \"fp32\", \"fp16\" or \"bf16\", got \"", name, "\"");
    }
    return *type;
}

int bitsField(const Napi::Object& object, const std::string& what) {
    const Napi::Value value = object.Get("bits");
    if (value.IsNumber()) {
        const double bits = value.As<Napi::Number>().DoubleValue();
        if (bits == 8 || bits == 4) return static_cast<int>(bits);
    }
    MIXZ_THROW(InvalidArgument, what, ".bits must be 8 or 4, got ", describe(value));
}

std::size_t blockSizeField(const Napi::Object& object, const char* key, const std::string& what) {
    const Napi::Value value = object.Get(key);
    if (value.IsNumber()) {
        const double size = value.As<Napi::Number>().DoubleValue();
        if (std::trunc(size) == size && size >= 1 && size <= static_cast<double>(quant::kMaxBlockSize) &&
            quant::isValidBlockSize(static_cast<std::size_t>(size))) {
            return static_cast<std::size_t>(size);
        }
    }
    MIXZ_THROW(InvalidArgument, what, ".", key, " must be a power of two in [", quant::kMinBlockSize, ", ",
               quant::kMaxBlockSize, "], got ", describe(value));
}

// Resolved here, on the JS thread: resolveSimd reads MIXZ_SIMD, which JS may be changing.
Simd simdField(const Napi::Object& object, const std::string& what) {
    const std::string name = stringField(object, "simd", what);
    const std::optional<Simd> simd = tensor::parseSimd(name);
    if (!simd) MIXZ_THROW(InvalidArgument, what, ".simd must be \"auto\", \"scalar\" or \"avx2\", got \"", name, "\"");
    return tensor::resolveSimd(*simd);
}

std::size_t threadsField(const Napi::Object& object, const std::string& what) {
    return sizeIn(object.Get("threads"), what + ".threads", static_cast<std::int64_t>(quant::maxThreads()));
}

const char* typedArrayName(napi_typedarray_type type) {
    switch (type) {
        case napi_int8_array:
            return "Int8Array";
        case napi_uint8_array:
            return "Uint8Array";
        case napi_uint16_array:
            return "Uint16Array";
        case napi_float32_array:
            return "Float32Array";
        default:
            return "another typed array";
    }
}

// The typed array of a float dtype: Float32Array for fp32, Uint16Array (bit patterns) otherwise.
napi_typedarray_type floatArrayType(DType type) {
    return type == DType::kFloat32 ? napi_float32_array : napi_uint16_array;
}

napi_typedarray_type codeArrayType(int bits) { return bits == 8 ? napi_int8_array : napi_uint8_array; }

// A typed array argument: its memory and a reference that keeps it alive while work runs.
struct ArrayArgument {
    void* data = nullptr;
    std::size_t length = 0;
};

ArrayArgument typedArray(Napi::Env env, const Napi::Value& value, const char* what, napi_typedarray_type expected,
                         KeepAlive& keep) {
    if (!value.IsTypedArray()) {
        MIXZ_THROW(InvalidArgument, what, " must be a ", typedArrayName(expected), ", got ", describe(value));
    }
    napi_typedarray_type type;
    std::size_t length = 0;
    void* data = nullptr;
    // Raw N-API: it also accepts typed arrays over a SharedArrayBuffer, and returns the data
    // pointer with the byte offset applied.
    if (napi_get_typedarray_info(env, value, &type, &length, &data, nullptr, nullptr) != napi_ok) {
        MIXZ_THROW(InvalidArgument, what, ": cannot read the typed array");
    }
    if (type != expected) {
        MIXZ_THROW(InvalidArgument, what, " must be a ", typedArrayName(expected), ", got a ", typedArrayName(type));
    }
    keep.add(value);
    return {data, length};
}

void expectLength(const ArrayArgument& array, std::size_t expected, const char* what, const char* why) {
    if (array.length != expected) {
        MIXZ_THROW(InvalidArgument, what, " has ", array.length, " elements, ", why, " needs ", expected);
    }
}

// The promise-returning work of this file: PromiseWorker.h.
Napi::Value queue(Napi::Env env, const char* name, std::function<void()> work, KeepAlive keep,
                  std::function<Napi::Value(Napi::Env)> result = {}) {
    return queuePromise(env, name, std::move(work), std::move(keep), std::move(result));
}

} // namespace

Napi::Value quantize(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    expectArguments(info, "quantize(input, q, scales, descriptor)", 4);
    const std::string what = "quantize: descriptor";
    const Napi::Object descriptor = objectArgument(info[3], "quantize: descriptor");
    quant::QuantizeOptions options;
    options.inputType = floatTypeField(descriptor, "dtype", what);
    options.bits = bitsField(descriptor, what);
    options.blockSize = blockSizeField(descriptor, "blockSize", what);
    options.elements = sizeIn(descriptor.Get("elements"), what + ".elements");
    options.paddedElements = sizeIn(descriptor.Get("paddedElements"), what + ".paddedElements");
    if (options.paddedElements < options.elements) {
        MIXZ_THROW(InvalidArgument, what, ".paddedElements (", options.paddedElements, ") is less than elements (",
                   options.elements, ")");
    }
    options.simd = simdField(descriptor, what);
    options.threads = threadsField(descriptor, what);

    KeepAlive keep;
    const ArrayArgument input =
        typedArray(env, info[0], "quantize: input", floatArrayType(options.inputType), keep);
    const ArrayArgument q = typedArray(env, info[1], "quantize: q", codeArrayType(options.bits), keep);
    const ArrayArgument scales = typedArray(env, info[2], "quantize: scales", napi_float32_array, keep);
    expectLength(input, options.elements, "quantize: input", "descriptor.elements");
    expectLength(q, quant::quantizedBytes(options.paddedElements, options.bits), "quantize: q",
                 "paddedElements at this bit width");
    expectLength(scales, quant::blockCount(options.paddedElements, options.blockSize), "quantize: scales",
                 "paddedElements in blocks of blockSize");
    options.input = input.data;
    options.output = q.data;
    options.outputBytes = q.length;
    options.scales = static_cast<float*>(scales.data);
    options.scaleCount = scales.length;
    return queue(env, "mixz.quantize", [options] { quant::quantize(options); }, std::move(keep));
}

Napi::Value dequantize(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    expectArguments(info, "dequantize(q, scales, out, descriptor)", 4);
    const std::string what = "dequantize: descriptor";
    const Napi::Object descriptor = objectArgument(info[3], "dequantize: descriptor");
    quant::DequantizeOptions options;
    options.bits = bitsField(descriptor, what);
    options.blockSize = blockSizeField(descriptor, "blockSize", what);
    options.elements = sizeIn(descriptor.Get("elements"), what + ".elements");
    options.outputType = floatTypeField(descriptor, "outDtype", what);
    options.simd = simdField(descriptor, what);
    options.threads = threadsField(descriptor, what);

    KeepAlive keep;
    const ArrayArgument q = typedArray(env, info[0], "dequantize: q", codeArrayType(options.bits), keep);
    const ArrayArgument scales = typedArray(env, info[1], "dequantize: scales", napi_float32_array, keep);
    const ArrayArgument out = typedArray(env, info[2], "dequantize: out", floatArrayType(options.outputType), keep);
    expectLength(q, quant::quantizedBytes(options.elements, options.bits), "dequantize: q",
                 "elements at this bit width");
    expectLength(scales, quant::blockCount(options.elements, options.blockSize), "dequantize: scales",
                 "elements in blocks of blockSize");
    expectLength(out, options.elements, "dequantize: out", "descriptor.elements");
    options.input = q.data;
    options.inputBytes = q.length;
    options.scales = static_cast<const float*>(scales.data);
    options.scaleCount = scales.length;
    options.output = out.data;
    options.outputElements = out.length;
    return queue(env, "mixz.dequantize", [options] { quant::dequantize(options); }, std::move(keep));
}

Napi::Value dequantizeSegments(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    expectArguments(info, "dequantizeSegments(q, scales, out, descriptor)", 4);
    const std::string what = "dequantizeSegments: descriptor";
    const Napi::Object descriptor = objectArgument(info[3], "dequantizeSegments: descriptor");
    quant::DequantizeSegmentsOptions options;
    options.bits = bitsField(descriptor, what);
    options.outputType = floatTypeField(descriptor, "outDtype", what);
    options.simd = simdField(descriptor, what);
    options.threads = threadsField(descriptor, what);
    const Napi::Value segments = descriptor.Get("segments");
    if (!segments.IsArray()) MIXZ_THROW(InvalidArgument, what, ".segments must be an array, got ", describe(segments));
    const Napi::Array list = segments.As<Napi::Array>();
    options.segments.reserve(list.Length());
    for (std::uint32_t i = 0; i < list.Length(); ++i) {
        const std::string where = detail::concat(what, ".segments[", i, "]");
        const Napi::Object object = objectArgument(list.Get(i), where.c_str());
        quant::DequantizeSegment segment;
        segment.elements = sizeIn(object.Get("elements"), where + ".elements");
        segment.blockSize = blockSizeField(object, "blockSize", where);
        segment.inputOffset = sizeIn(object.Get("inputOffset"), where + ".inputOffset");
        segment.scaleOffset = sizeIn(object.Get("scaleOffset"), where + ".scaleOffset");
        segment.outputOffset = sizeIn(object.Get("outputOffset"), where + ".outputOffset");
        options.segments.push_back(segment);
    }

    KeepAlive keep;
    const ArrayArgument q = typedArray(env, info[0], "dequantizeSegments: q", codeArrayType(options.bits), keep);
    const ArrayArgument scales = typedArray(env, info[1], "dequantizeSegments: scales", napi_float32_array, keep);
    const ArrayArgument out =
        typedArray(env, info[2], "dequantizeSegments: out", floatArrayType(options.outputType), keep);
    options.input = q.data;
    options.inputBytes = q.length;
    options.scales = static_cast<const float*>(scales.data);
    options.scaleCount = scales.length;
    options.output = out.data;
    options.outputElements = out.length;
    // Segment ranges against the buffers: checked now, so a bad descriptor throws here rather
    // than rejecting later (the core checks again before the work).
    quant::validateSegments(options);
    auto shared = std::make_shared<quant::DequantizeSegmentsOptions>(std::move(options));
    return queue(env, "mixz.dequantizeSegments", [shared] { quant::dequantizeSegments(*shared); }, std::move(keep));
}

Napi::Value convertFloats(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    expectArguments(info, "convertFloats(input, output, descriptor)", 3);
    const std::string what = "convertFloats: descriptor";
    const Napi::Object descriptor = objectArgument(info[2], "convertFloats: descriptor");
    tensor::ConvertOptions options;
    options.inputType = floatTypeField(descriptor, "from", what);
    options.outputType = floatTypeField(descriptor, "to", what);
    options.simd = simdField(descriptor, what);
    options.threads = threadsField(descriptor, what);
    KeepAlive keep;
    const ArrayArgument input =
        typedArray(env, info[0], "convertFloats: input", floatArrayType(options.inputType), keep);
    const ArrayArgument output =
        typedArray(env, info[1], "convertFloats: output", floatArrayType(options.outputType), keep);
    expectLength(output, input.length, "convertFloats: output", "the input's length");
    options.input = input.data;
    options.output = output.data;
    options.elements = input.length;
    return queue(env, "mixz.convertFloats", [options] { tensor::convert(options); }, std::move(keep));
}

Napi::Value quantBenchmark(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    expectArguments(info, "quantBenchmark(descriptor)", 1);
    const std::string what = "quantBenchmark: descriptor";
    const Napi::Object descriptor = objectArgument(info[0], "quantBenchmark: descriptor");
    quant::BenchmarkOptions options;
    options.elements = static_cast<std::size_t>(integerIn(descriptor.Get("elements"), what + ".elements", 1,
                                                          std::int64_t{1} << 32));
    options.inputType = floatTypeField(descriptor, "dtype", what);
    options.bits = bitsField(descriptor, what);
    options.blockSize = blockSizeField(descriptor, "blockSize", what);
    options.iterations =
        static_cast<std::size_t>(integerIn(descriptor.Get("iterations"), what + ".iterations", 1, 10000));
    options.threads = threadsField(descriptor, what);
    options.simd = simdField(descriptor, what);
    auto result = std::make_shared<quant::BenchmarkResult>();
    return queue(
        env, "mixz.quantBenchmark", [options, result] { *result = quant::benchmark(options); }, KeepAlive{},
        [result](Napi::Env resultEnv) -> Napi::Value {
            Napi::Object object = Napi::Object::New(resultEnv);
            object.Set("inputBytes", static_cast<double>(result->inputBytes));
            object.Set("quantizedBytes", static_cast<double>(result->quantizedBytes));
            object.Set("quantizeSeconds", result->quantizeSeconds);
            object.Set("dequantizeSeconds", result->dequantizeSeconds);
            object.Set("memcpySeconds", result->memcpySeconds);
            object.Set("quantizeGBps", result->quantizeGBps);
            object.Set("dequantizeGBps", result->dequantizeGBps);
            object.Set("dequantizeOutputGBps", result->dequantizeOutputGBps);
            object.Set("memcpyGBps", result->memcpyGBps);
            object.Set("simd", tensor::simdName(result->simd));
            object.Set("threads", static_cast<double>(result->threads));
            return object;
        });
}

Napi::Value quantInfo(const Napi::CallbackInfo& info) {
    expectArguments(info, "quantInfo()", 0);
    Napi::Object result = Napi::Object::New(info.Env());
    const bool avx2 = tensor::cpuHasAvx2Kernels();
    result.Set("avx2", avx2);
    result.Set("defaultSimd", avx2 ? "avx2" : "scalar");
    result.Set("defaultThreads", static_cast<double>(quant::defaultThreads()));
    result.Set("maxThreads", static_cast<double>(quant::maxThreads()));
    return result;
}

} // namespace mixz::addon

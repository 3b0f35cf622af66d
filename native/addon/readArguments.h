// Readers for the arguments and descriptor fields that JS hands the addon. TS validates first
// (house rule: validate at the edge); these are the second line, so a bad value that slipped past
// still becomes an InvalidArgument naming the field and what it was, never undefined behaviour.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace mixz::addon {

// What a wrong value was, for messages: numbers and strings by value, typed arrays by kind,
// everything else by type.
std::string describe(const Napi::Value& value);

// A JS number that is an integer in [min, max]; InvalidArgument naming `what` otherwise.
std::int64_t integerIn(const Napi::Value& value, const std::string& what, std::int64_t min, std::int64_t max);

// Exactly `count` arguments, or InvalidArgument quoting the call's signature.
void expectArguments(const Napi::CallbackInfo& info, const char* signature, std::size_t count);

// A plain object (not an array, function or typed array).
Napi::Object objectArgument(const Napi::Value& value, const std::string& what);

// object[key] as a string; the message names `what.key`.
std::string stringField(const Napi::Object& object, const char* key, const std::string& what);

}  // namespace mixz::addon

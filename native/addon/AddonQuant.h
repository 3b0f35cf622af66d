// JS face of mixz/quant (block quantization) and of mixz/tensor's float conversions.
//
//   quantize(input, q, scales, {dtype, bits, blockSize, elements, paddedElements, simd, threads})   → Promise<void>
//   dequantize(q, scales, out, {bits, blockSize, elements, outDtype, simd, threads})                → Promise<void>
//   dequantizeSegments(q, scales, out, {bits, outDtype, segments, simd, threads})                   → Promise<void>
//   convertFloats(input, output, {from, to, simd, threads})                                         → Promise<void>
//   quantBenchmark({elements, dtype, bits, blockSize, iterations, threads, simd})                   → Promise<result>
//   quantInfo()                                                                                     → {avx2, defaultSimd, defaultThreads, maxThreads}
//
// Typed in packages/engine/src/binding/AddonTypes.ts; @mixz/engine's quantize.ts validates first and
// allocates the outputs. Every descriptor is complete (no defaults here) and checked again:
// wrong typed-array kinds or lengths, bad numbers and unknown names throw MIXZ_ERR_INVALID_ARGUMENT
// synchronously. The work itself always runs on libuv's thread pool (an AsyncWorker; the shared
// quantization pool splits large buffers further), never on the JS thread, whatever the size:
// the promise resolves when the outputs are written, or rejects with the converted error
// (non-finite input values: MIXZ_ERR_INVALID_ARGUMENT). The typed arrays are kept referenced
// until then; callers must not detach (transfer) them while a call is in flight.
#pragma once

#include <napi.h>

namespace mixz::addon {

// Register each through guarded<>.
Napi::Value quantize(const Napi::CallbackInfo& info);
Napi::Value dequantize(const Napi::CallbackInfo& info);
Napi::Value dequantizeSegments(const Napi::CallbackInfo& info);
Napi::Value convertFloats(const Napi::CallbackInfo& info);
Napi::Value quantBenchmark(const Napi::CallbackInfo& info);
Napi::Value quantInfo(const Napi::CallbackInfo& info);

} // namespace mixz::addon

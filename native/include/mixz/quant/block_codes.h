// The per-block and per-element arithmetic of the block quantizer (mixz/quant/block_quant.h
// documents the format) as MIXZ_HD functions. The CPU's scalar kernels and the scalar tails of the
// AVX2 kernels (src/quant) call them, and so do the CUDA kernels (src/cuda/quant): one definition
// of the scale, the rounding, the clamp, the int4 nibbles and the dequantization product, so the
// device's codes and scales are the CPU's by construction. native/test/host_device_test.cc checks
// these functions on the CPU against quant::quantize / dequantize (whichever kernel set the CPU
// dispatches to).
//
// Exactness on the device: every float operation that must round exactly as on the CPU is written
// with an explicit round-to-nearest intrinsic under __CUDA_ARCH__ (__fmul_rn, __fdiv_rn), which
// nvcc never contracts into an FMA and which stay correctly rounded whatever -fmad / -prec-div
// say. (A product followed by a conversion could not be contracted anyway; the intrinsics make the
// guarantee independent of the build flags, which the build script does not set to -fmad=false.)
// Subnormals must not be flushed: never build these with -ftz=true or --use_fast_math (nvcc's
// default is -ftz=false).
#pragma once

#include <cstddef>
#include <cstdint>

#include "mixz/common/host_device.h"
#include "mixz/tensor/dtype.h"
#include "mixz/tensor/half_bits.h"

#if (defined(__x86_64__) || defined(__i386__)) && !defined(__CUDA_ARCH__)
#include <xmmintrin.h>
#define MIXZ_BLOCK_CODES_SSE 1
#else
#include <cmath>
#endif

namespace mixz::quant::codes {

// Q = 2^bits / 2: the codes are [-Q, Q - 1].
MIXZ_HD int codeLow(int bits) { return bits == 8 ? -128 : -8; }
MIXZ_HD int codeHigh(int bits) { return bits == 8 ? 127 : 7; }

// The magnitude bit pattern (sign cleared) of a value as stored: integer order of these patterns
// is the order of the magnitudes, so a block's absmax is an integer maximum.
MIXZ_HD std::uint32_t magnitudeBits(float value) { return tensor::floatBits(value) & 0x7FFFFFFFu; }
MIXZ_HD std::uint32_t magnitudeBits(std::uint16_t half) { return static_cast<std::uint32_t>(half & 0x7FFFu); }

// The magnitude pattern of +infinity for a dtype; patterns at or above it are ±inf or NaN.
MIXZ_HD std::uint32_t infinityMagnitude(tensor::DType type) {
    return type == tensor::DType::kFloat32 ? 0x7F800000u : type == tensor::DType::kFloat16 ? 0x7C00u : 0x7F80u;
}

// A magnitude pattern of `type` as a float32 value (exact).
MIXZ_HD float magnitudeToFloat(std::uint32_t magnitude, tensor::DType type) {
    switch (type) {
        case tensor::DType::kFloat16:
            return tensor::fp16ToFloat(static_cast<std::uint16_t>(magnitude));
        case tensor::DType::kBFloat16:
            return tensor::bf16ToFloat(static_cast<std::uint16_t>(magnitude));
        default:
            return tensor::bitsToFloat(magnitude);
    }
}

// Q / absmax with Q = 128 (int8) or 8 (int4); 1 for an all-zero block and for a block so small
// that Q / absmax overflows float32 (it then quantizes to zeros). The finiteness test is on the
// bits (an infinite quotient has the all-ones exponent) so that it needs no library call.
MIXZ_HD float blockScale(float absmax, int bits) {
    if (absmax == 0.0f) return 1.0f;
    const float q = bits == 8 ? 128.0f : 8.0f;
#if defined(__CUDA_ARCH__)
    const float scale = __fdiv_rn(q, absmax);
#else
    const float scale = q / absmax;
#endif
    return (tensor::floatBits(scale) & 0x7F800000u) != 0x7F800000u ? scale : 1.0f;
}

// The stored per-block multiplier s = 1 / scale.
MIXZ_HD float dequantMultiplier(float scale) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(1.0f, scale);
#else
    return 1.0f / scale;
#endif
}

// round_half_even(v) for |v| < 2^31. Host x86: CVTSS2SI under the default rounding mode (nearest
// even), the scalar form of the AVX2 kernels' VCVTPS2DQ, and much faster than nearbyintf. Device:
// __float2int_rn, nearest even by definition (independent of any mode). Elsewhere std::nearbyint.
MIXZ_HD int roundToInt(float v) {
#if defined(__CUDA_ARCH__)
    return __float2int_rn(v);
#elif defined(MIXZ_BLOCK_CODES_SSE)
    return _mm_cvtss_si32(_mm_set_ss(v));
#else
    return static_cast<int>(std::nearbyint(v));
#endif
}

// clamp(round_half_even(x * scale), -Q, Q - 1). |x * scale| ≤ Q (1 + 2^-23) for x in the block,
// so the rounded value fits an int.
MIXZ_HD int quantizeValue(float x, float scale, int bits) {
#if defined(__CUDA_ARCH__)
    const int q = roundToInt(__fmul_rn(x, scale));
#else
    const int q = roundToInt(x * scale);
#endif
    const int low = codeLow(bits);
    const int high = codeHigh(bits);
    return q < low ? low : (q > high ? high : q);
}

// An int8 code as its stored byte.
MIXZ_HD std::uint8_t int8Byte(int q) { return static_cast<std::uint8_t>(static_cast<std::int8_t>(q)); }
MIXZ_HD int int8Code(std::uint8_t byte) { return static_cast<std::int8_t>(byte); }

// Packed int4: the high nibble holds element 2i, the low nibble element 2i+1.
MIXZ_HD std::uint8_t packInt4(int even, int odd) {
    return static_cast<std::uint8_t>(((static_cast<unsigned>(even) & 0xFu) << 4) | (static_cast<unsigned>(odd) & 0xFu));
}
MIXZ_HD int int4High(std::uint8_t byte) { return static_cast<std::int8_t>(byte) >> 4; }
MIXZ_HD int int4Low(std::uint8_t byte) { return static_cast<std::int8_t>(static_cast<std::uint8_t>(byte << 4)) >> 4; }

// y = float(q) · s in float32 (float(q) is exact).
MIXZ_HD float dequantizeValue(int q, float s) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(static_cast<float>(q), s);
#else
    return static_cast<float>(q) * s;
#endif
}

// Element i of a buffer of `Type` (fp32, fp16, bf16) as float32, and a float32 stored as `Type`
// (round to nearest even): the loads and stores of the kernels.
template <tensor::DType Type>
MIXZ_HD float loadAsFloat(const void* input, std::size_t i) {
    if constexpr (Type == tensor::DType::kFloat16) {
        return tensor::fp16ToFloat(static_cast<const std::uint16_t*>(input)[i]);
    } else if constexpr (Type == tensor::DType::kBFloat16) {
        return tensor::bf16ToFloat(static_cast<const std::uint16_t*>(input)[i]);
    } else {
        return static_cast<const float*>(input)[i];
    }
}

template <tensor::DType Type>
MIXZ_HD void storeFromFloat(void* output, std::size_t i, float value) {
    if constexpr (Type == tensor::DType::kFloat16) {
        static_cast<std::uint16_t*>(output)[i] = tensor::floatToFp16(value);
    } else if constexpr (Type == tensor::DType::kBFloat16) {
        static_cast<std::uint16_t*>(output)[i] = tensor::floatToBf16(value);
    } else {
        static_cast<float*>(output)[i] = value;
    }
}

} // namespace mixz::quant::codes

// AVX2 + F16C block kernels. Only the functions marked MIXZ_AVX2 are AVX2 code; block_quant.cc
// calls them only when tensor::resolveSimd chose Simd::kAvx2 (so the CPU has the instructions).
//
// They perform the scalar kernels' operations on 8 lanes: the same float32 products, rounding by
// VCVTPS2DQ under the default MXCSR mode (nearest even, as std::nearbyint), clamping by the
// saturating packs (int8) and byte min/max (int4), the same conversions (F16C is exact for fp16
// → fp32 and rounds to nearest even the other way). Tails shorter than a vector go through the
// scalar functions of kernels.h.
#include "kernels.h"

#include <algorithm>

#include "mixz/common/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include "mixz/tensor/detail/avx2.h"

namespace mixz::quant::detail {
namespace {

using tensor::DType;
namespace avx2 = tensor::avx2;

MIXZ_AVX2 std::uint32_t magnitudeAvx2(const void* input, DType type, std::size_t n) {
    std::size_t i = 0;
    std::uint32_t largest = 0;
    if (type == DType::kFloat32) {
        const auto* in = static_cast<const float*>(input);
        const __m256i mask = _mm256_set1_epi32(0x7FFFFFFF);
        __m256i m0 = _mm256_setzero_si256();
        __m256i m1 = _mm256_setzero_si256();
        for (; i + 16 <= n; i += 16) {
            m0 = _mm256_max_epu32(m0, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i)), mask));
            m1 = _mm256_max_epu32(m1,
                                  _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i + 8)), mask));
        }
        for (; i + 8 <= n; i += 8) {
            m0 = _mm256_max_epu32(m0, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i)), mask));
        }
        largest = avx2::horizontalMaxU32(_mm256_max_epu32(m0, m1));
        for (; i < n; ++i) largest = std::max(largest, tensor::floatBits(in[i]) & 0x7FFFFFFFu);
        return largest;
    }
    const auto* in = static_cast<const std::uint16_t*>(input);
    const __m256i mask = _mm256_set1_epi16(0x7FFF);
    __m256i m0 = _mm256_setzero_si256();
    __m256i m1 = _mm256_setzero_si256();
    for (; i + 32 <= n; i += 32) {
        m0 = _mm256_max_epu16(m0, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i)), mask));
        m1 = _mm256_max_epu16(m1,
                              _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i + 16)), mask));
    }
    for (; i + 16 <= n; i += 16) {
        m0 = _mm256_max_epu16(m0, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i)), mask));
    }
    const __m256i m = _mm256_max_epu16(m0, m1);
    largest = avx2::horizontalMaxU16(_mm_max_epu16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1)));
    for (; i < n; ++i) largest = std::max<std::uint32_t>(largest, in[i] & 0x7FFFu);
    return largest;
}

template <DType Type>
constexpr std::size_t kElementSize = Type == DType::kFloat32 ? 4 : 2;

template <DType Type>
MIXZ_AVX2_INLINE __m256 load8(const void* input, std::size_t i) {
    if constexpr (Type == DType::kFloat16) {
        return avx2::load8Fp16(static_cast<const std::uint16_t*>(input) + i);
    } else if constexpr (Type == DType::kBFloat16) {
        return avx2::load8Bf16(static_cast<const std::uint16_t*>(input) + i);
    } else {
        return avx2::load8(static_cast<const float*>(input) + i);
    }
}

// 32 values → 32 int8 codes in element order, saturated to [-128, 127].
template <DType Type>
MIXZ_AVX2_INLINE __m256i quantize32(const void* input, std::size_t i, __m256 scale) {
    const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(load8<Type>(input, i), scale));
    const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(load8<Type>(input, i + 8), scale));
    const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(load8<Type>(input, i + 16), scale));
    const __m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(load8<Type>(input, i + 24), scale));
    // The packs work per 128-bit lane: the bytes come out as dwords a0 b0 c0 d0 | a1 b1 c1 d1
    // (each dword 4 codes); the permutation puts them back in element order.
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

template <DType Type>
MIXZ_AVX2 void quantizeInt8(const void* input, std::size_t n, float scale, std::uint8_t* out) {
    const __m256 s = _mm256_set1_ps(scale);
    std::size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), quantize32<Type>(input, i, s));
    }
    quantizeValuesScalar(static_cast<const unsigned char*>(input) + i * kElementSize<Type>, Type, n - i, scale, 8,
                         out + i);
}

template <DType Type>
MIXZ_AVX2 void quantizeInt4(const void* input, std::size_t n, float scale, std::uint8_t* out) {
    const __m256 s = _mm256_set1_ps(scale);
    const __m256i low4 = _mm256_set1_epi16(0x000F);
    std::size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i codes = quantize32<Type>(input, i, s);
        codes = _mm256_min_epi8(_mm256_max_epi8(codes, _mm256_set1_epi8(-8)), _mm256_set1_epi8(7));
        // In each 16-bit lane the low byte is element 2k (→ bits 4-7), the high byte 2k+1 (→ 0-3).
        const __m256i high = _mm256_slli_epi16(_mm256_and_si256(codes, low4), 4);
        const __m256i low = _mm256_and_si256(_mm256_srli_epi16(codes, 8), low4);
        const __m256i pairs = _mm256_or_si256(high, low);
        const __m128i packed = _mm_packus_epi16(_mm256_castsi256_si128(pairs), _mm256_extracti128_si256(pairs, 1));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i / 2), packed);
    }
    quantizeValuesScalar(static_cast<const unsigned char*>(input) + i * kElementSize<Type>, Type, n - i, scale, 4,
                         out + i / 2);
}

template <DType Type>
MIXZ_AVX2 std::size_t quantizeBlocks(const QuantizeJob& job, std::size_t first, std::size_t last) {
    const std::uint32_t infinity = infinityMagnitude(Type);
    for (std::size_t block = first; block < last; ++block) {
        const BlockExtent extent = blockExtent(job, block);
        const void* in = static_cast<const unsigned char*>(job.input) + extent.start * kElementSize<Type>;
        const std::uint32_t magnitude = magnitudeAvx2(in, Type, extent.real);
        if (magnitude >= infinity) return block;
        const float scale = blockScale(magnitudeToFloat(magnitude, Type), job.bits);
        job.scales[block] = dequantMultiplier(scale);
        if (job.bits == 8) {
            quantizeInt8<Type>(in, extent.real, scale, job.output + extent.start);
        } else {
            quantizeInt4<Type>(in, extent.real, scale, job.output + extent.start / 2);
        }
        zeroPadding(job, extent);
    }
    return kNoBadBlock;
}

// Stream: non-temporal stores (the caller checked that every 8-value group is aligned).
template <DType Out, bool Stream>
MIXZ_AVX2_INLINE void store8(void* output, std::size_t i, __m256 v) {
    if constexpr (Out == DType::kFloat16) {
        auto* p = static_cast<std::uint16_t*>(output) + i;
        if constexpr (Stream) {
            _mm_stream_si128(reinterpret_cast<__m128i*>(p), avx2::toFp16(v));
        } else {
            avx2::store8Fp16(p, v);
        }
    } else if constexpr (Out == DType::kBFloat16) {
        auto* p = static_cast<std::uint16_t*>(output) + i;
        if constexpr (Stream) {
            _mm_stream_si128(reinterpret_cast<__m128i*>(p), avx2::toBf16(v));
        } else {
            avx2::store8Bf16(p, v);
        }
    } else {
        float* p = static_cast<float*>(output) + i;
        if constexpr (Stream) {
            _mm256_stream_ps(p, v);
        } else {
            avx2::store8(p, v);
        }
    }
}

template <DType Out, bool Stream>
MIXZ_AVX2_INLINE void dequantize8(const std::uint8_t* in, std::size_t i, __m256 s, void* out) {
    const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + i)));
    store8<Out, Stream>(out, i, _mm256_mul_ps(_mm256_cvtepi32_ps(q), s));
}

// Int8 codes [first, first + n) of one block with multiplier s.
template <DType Out, bool Stream>
MIXZ_AVX2 void dequantizeInt8(const std::uint8_t* in, std::size_t first, std::size_t n, float scale, void* out) {
    const __m256 s = _mm256_set1_ps(scale);
    const std::size_t end = first + n;
    std::size_t i = first;
    for (; i + 32 <= end; i += 32) {
        dequantize8<Out, Stream>(in, i, s, out);
        dequantize8<Out, Stream>(in, i + 8, s, out);
        dequantize8<Out, Stream>(in, i + 16, s, out);
        dequantize8<Out, Stream>(in, i + 24, s, out);
    }
    for (; i + 8 <= end; i += 8) dequantize8<Out, Stream>(in, i, s, out);
    dequantizeValuesScalar(in, 8, i, end - i, scale, out, Out);
}

// Int4 codes [first, first + n) (first even) of one block with multiplier s.
template <DType Out, bool Stream>
MIXZ_AVX2 void dequantizeInt4(const std::uint8_t* in, std::size_t first, std::size_t n, float scale, void* out) {
    const __m256 s = _mm256_set1_ps(scale);
    const std::size_t end = first + n;
    std::size_t i = first;
    for (; i + 16 <= end; i += 16) {
        // 8 bytes → 16 codes: the high nibble (element 2k) and the low nibble (2k+1) of each
        // sign-extended byte, by arithmetic shifts.
        const __m256i bytes = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + i / 2)));
        const __m256i high = _mm256_srai_epi32(bytes, 4);
        const __m256i low = _mm256_srai_epi32(_mm256_slli_epi32(bytes, 28), 28);
        // unpack interleaves per 128-bit lane: [h0 l0 h1 l1 | h4 l4 h5 l5] and [h2 l2 h3 l3 | h6 l6 h7 l7].
        const __m256i u0 = _mm256_unpacklo_epi32(high, low);
        const __m256i u1 = _mm256_unpackhi_epi32(high, low);
        const __m256i first8 = _mm256_permute2x128_si256(u0, u1, 0x20);
        const __m256i second8 = _mm256_permute2x128_si256(u0, u1, 0x31);
        store8<Out, Stream>(out, i, _mm256_mul_ps(_mm256_cvtepi32_ps(first8), s));
        store8<Out, Stream>(out, i + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(second8), s));
    }
    dequantizeValuesScalar(in, 4, i, end - i, scale, out, Out);
}

template <DType Out, bool Stream>
MIXZ_AVX2 void dequantizeBlocksAs(const DequantizeRun& run) {
    for (std::size_t start = 0, block = 0; start < run.elements; start += run.blockSize, ++block) {
        const std::size_t n = std::min(run.blockSize, run.elements - start);
        if (run.bits == 8) {
            dequantizeInt8<Out, Stream>(run.input, start, n, run.scales[block], run.output);
        } else {
            dequantizeInt4<Out, Stream>(run.input, start, n, run.scales[block], run.output);
        }
    }
}

template <DType Out>
MIXZ_AVX2 void dequantizeBlocks(const DequantizeRun& run) {
    // Non-temporal stores need every 8-value group aligned to its width (16 bytes for 16-bit
    // outputs, 32 for fp32): blocks start at multiples of 8 values from `output`, so `output`
    // aligned is enough. Otherwise ordinary stores: the same values.
    constexpr std::uintptr_t alignment = Out == DType::kFloat32 ? 32 : 16;
    if (run.streaming && (reinterpret_cast<std::uintptr_t>(run.output) & (alignment - 1)) == 0) {
        dequantizeBlocksAs<Out, true>(run);
        _mm_sfence(); // the streamed values are visible to whichever thread looks next
    } else {
        dequantizeBlocksAs<Out, false>(run);
    }
}

} // namespace

std::size_t quantizeBlocksAvx2(const QuantizeJob& job, std::size_t first, std::size_t last) {
    switch (job.inputType) {
        case DType::kFloat32:
            return quantizeBlocks<DType::kFloat32>(job, first, last);
        case DType::kFloat16:
            return quantizeBlocks<DType::kFloat16>(job, first, last);
        case DType::kBFloat16:
            return quantizeBlocks<DType::kBFloat16>(job, first, last);
        default:
            MIXZ_ENFORCE(false, "quantize: not a floating-point input type: ", tensor::dtypeName(job.inputType));
    }
    return kNoBadBlock;
}

void dequantizeAvx2(const DequantizeRun& run) {
    switch (run.outputType) {
        case DType::kFloat32:
            return dequantizeBlocks<DType::kFloat32>(run);
        case DType::kFloat16:
            return dequantizeBlocks<DType::kFloat16>(run);
        case DType::kBFloat16:
            return dequantizeBlocks<DType::kBFloat16>(run);
        default:
            MIXZ_ENFORCE(false, "dequantize: not a floating-point output type: ", tensor::dtypeName(run.outputType));
    }
}

} // namespace mixz::quant::detail

#else // not x86: resolveSimd never picks Simd::kAvx2 (cpuHasAvx2Kernels() is false).

namespace mixz::quant::detail {

std::size_t quantizeBlocksAvx2(const QuantizeJob&, std::size_t, std::size_t) {
    MIXZ_ENFORCE(false, "AVX2 kernels called on a non-x86 build");
    return kNoBadBlock;
}

void dequantizeAvx2(const DequantizeRun&) { MIXZ_ENFORCE(false, "AVX2 kernels called on a non-x86 build"); }

} // namespace mixz::quant::detail

#endif

// AVX2 building blocks shared by the tensor and quant kernels. Internal to native/src.
//
// Everything here carries __attribute__((target("avx2,fma,f16c"))): only these functions (and the
// kernels that inline them) are compiled for AVX2, the rest of the binary stays baseline x86-64,
// and nothing here may run unless tensor::cpuHasAvx2Kernels() is true. Never compile a whole
// translation unit with -mavx2 or #pragma GCC target: inline functions of other headers
// instantiated there would be AVX2 code the linker may pick for baseline callers.
//
// Each function gives exactly the result of its scalar twin in mixz/tensor/dtype.h.
#pragma once

#if !defined(__x86_64__) && !defined(__i386__)
#error "mixz/tensor/detail/avx2.h is x86 only"
#endif

#include <immintrin.h>

#include <cstdint>

#define MIXZ_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MIXZ_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline

namespace mixz::tensor::avx2 {

// 8 floats from 8 values of each float type (exact conversions).
MIXZ_AVX2_INLINE __m256 load8(const float* p) { return _mm256_loadu_ps(p); }

MIXZ_AVX2_INLINE __m256 load8Fp16(const std::uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

MIXZ_AVX2_INLINE __m256 load8Bf16(const std::uint16_t* p) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

// 8 floats → 8 fp16 patterns, round to nearest even (the immediate, not MXCSR, sets the rounding).
MIXZ_AVX2_INLINE __m128i toFp16(__m256 v) { return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT); }

// 8 floats → 8 bf16 patterns, round to nearest even, NaN made quiet (as tensor::floatToBf16).
MIXZ_AVX2_INLINE __m128i toBf16(__m256 v) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i rounded =
        _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)), odd), 16);
    const __m256i magnitude = _mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFFFF));
    const __m256i isNan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7F800000));
    const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
    const __m256i result = _mm256_blendv_epi8(rounded, quiet, isNan);
    // Every lane holds a value in [0, 0xFFFF], so the saturating pack is exact.
    return _mm_packus_epi32(_mm256_castsi256_si128(result), _mm256_extracti128_si256(result, 1));
}

MIXZ_AVX2_INLINE void store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }

MIXZ_AVX2_INLINE void store8Fp16(std::uint16_t* p, __m256 v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), toFp16(v));
}

MIXZ_AVX2_INLINE void store8Bf16(std::uint16_t* p, __m256 v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), toBf16(v));
}

// Largest of 8 unsigned 16-bit lanes.
MIXZ_AVX2_INLINE std::uint32_t horizontalMaxU16(__m128i v) {
    // minpos finds the smallest lane; on the complement that is the largest.
    const __m128i complement = _mm_xor_si128(v, _mm_set1_epi32(-1));
    return 0xFFFFu - (static_cast<std::uint32_t>(_mm_cvtsi128_si32(_mm_minpos_epu16(complement))) & 0xFFFFu);
}

// Largest of 8 unsigned 32-bit lanes.
MIXZ_AVX2_INLINE std::uint32_t horizontalMaxU32(__m256i v) {
    __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
    return static_cast<std::uint32_t>(_mm_cvtsi128_si32(m));
}

} // namespace mixz::tensor::avx2

#include "mixz/comm/reduce.h"

#include <immintrin.h>

#include <cstdlib>
#include <cstring>

#include "mixz/common/error.h"

namespace mixz::comm {
namespace {

using tensor::DType;

// One element at a time; the reference the vector kernels must match bit for bit.
float loadScalar(DType dtype, const void* src, std::size_t i) {
    switch (dtype) {
        case DType::kFloat32: return static_cast<const float*>(src)[i];
        case DType::kFloat16: return tensor::fp16ToFloat(static_cast<const std::uint16_t*>(src)[i]);
        default: return tensor::bf16ToFloat(static_cast<const std::uint16_t*>(src)[i]);
    }
}

void storeScalar(DType dtype, void* dst, std::size_t i, float value) {
    switch (dtype) {
        case DType::kFloat32: static_cast<float*>(dst)[i] = value; break;
        case DType::kFloat16: static_cast<std::uint16_t*>(dst)[i] = tensor::floatToFp16(value); break;
        default: static_cast<std::uint16_t*>(dst)[i] = tensor::floatToBf16(value); break;
    }
}

void reduceScalar(DType dtype, ReduceOp op, void* dst, const void* const* srcs, std::size_t n, std::size_t begin,
                  std::size_t end, int divisor) {
    const float div = static_cast<float>(divisor);
    for (std::size_t i = begin; i < end; ++i) {
        float acc = loadScalar(dtype, srcs[0], i);
        for (std::size_t k = 1; k < n; ++k) {
            const float x = loadScalar(dtype, srcs[k], i);
            // Written as MAXPS computes it (first operand if greater, else the second), so scalar
            // and vector agree on NaNs and signed zeros too.
            acc = op == ReduceOp::kMax ? (acc > x ? acc : x) : acc + x;
        }
        if (op == ReduceOp::kMean) acc = acc / div;
        storeScalar(dtype, dst, i, acc);
    }
}

__attribute__((target("avx2,f16c"))) inline __m256 load8(DType dtype, const void* src, std::size_t i) {
    switch (dtype) {
        case DType::kFloat32: return _mm256_loadu_ps(static_cast<const float*>(src) + i);
        case DType::kFloat16:
            return _mm256_cvtph_ps(
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const std::uint16_t*>(src) + i)));
        default: {
            const __m128i half =
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const std::uint16_t*>(src) + i));
            return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16));
        }
    }
}

__attribute__((target("avx2,f16c"))) inline void store8(DType dtype, void* dst, std::size_t i, __m256 value) {
    switch (dtype) {
        case DType::kFloat32: _mm256_storeu_ps(static_cast<float*>(dst) + i, value); break;
        case DType::kFloat16:
            _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<std::uint16_t*>(dst) + i),
                             _mm256_cvtps_ph(value, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            break;
        default: {
            // floatToBf16, eight at a time: round to nearest even by integer addition; NaN made quiet.
            const __m256i bits = _mm256_castps_si256(value);
            const __m256i magnitude = _mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFFFF));
            const __m256i isNan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7F800000));
            const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
            const __m256i rounded =
                _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)), odd), 16);
            const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
            const __m256i result = _mm256_blendv_epi8(rounded, quiet, isNan);
            // Pack the eight 32-bit lanes (each < 2^16) to 16 bits: packus works per 128-bit lane,
            // so gather the two useful quadwords afterwards.
            const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(result, result), 0x08);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<std::uint16_t*>(dst) + i),
                             _mm256_castsi256_si128(packed));
            break;
        }
    }
}

__attribute__((target("avx2,f16c"))) void reduceAvx2(DType dtype, ReduceOp op, void* dst, const void* const* srcs,
                                                     std::size_t n, std::size_t count, int divisor) {
    const __m256 div = _mm256_set1_ps(static_cast<float>(divisor));
    std::size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 acc = load8(dtype, srcs[0], i);
        for (std::size_t k = 1; k < n; ++k) {
            const __m256 x = load8(dtype, srcs[k], i);
            acc = op == ReduceOp::kMax ? _mm256_max_ps(acc, x) : _mm256_add_ps(acc, x);
        }
        if (op == ReduceOp::kMean) acc = _mm256_div_ps(acc, div);
        store8(dtype, dst, i, acc);
    }
    reduceScalar(dtype, op, dst, srcs, n, i, count, divisor);
}

bool detectAvx2() noexcept {
    const char* simd = std::getenv("MIXZ_SIMD");
    if (simd != nullptr && std::strcmp(simd, "scalar") == 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
}

} // namespace

const char* reduceOpName(ReduceOp op) noexcept {
    switch (op) {
        case ReduceOp::kSum: return "sum";
        case ReduceOp::kMean: return "mean";
        case ReduceOp::kMax: return "max";
    }
    return "?";
}

const char* dtypeLabel(tensor::DType dtype) noexcept {
    switch (dtype) {
        case DType::kFloat32: return "fp32";
        case DType::kFloat16: return "fp16";
        case DType::kBFloat16: return "bf16";
        case DType::kInt8: return "int8";
        case DType::kInt4: return "int4";
    }
    return "?";
}

std::size_t reducibleElementBytes(tensor::DType dtype) {
    switch (dtype) {
        case DType::kFloat32: return 4;
        case DType::kFloat16:
        case DType::kBFloat16: return 2;
        default: break;
    }
    MIXZ_THROW(InvalidArgument, "reductions take fp32, fp16 or bf16, got ", dtypeLabel(dtype));
}

bool reduceUsesAvx2() noexcept {
    static const bool avx2 = detectAvx2();
    return avx2;
}

void reduce(tensor::DType dtype, ReduceOp op, void* dst, const void* const* srcs, std::size_t sourceCount,
            std::size_t count, int divisor) {
    MIXZ_ENFORCE(sourceCount >= 1, "reduce needs at least one source");
    reducibleElementBytes(dtype);
    if (count == 0) return;
    if (reduceUsesAvx2()) {
        reduceAvx2(dtype, op, dst, srcs, sourceCount, count, divisor);
    } else {
        reduceScalar(dtype, op, dst, srcs, sourceCount, 0, count, divisor);
    }
}

} // namespace mixz::comm

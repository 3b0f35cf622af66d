// The building blocks of the decoder kernels (llama.cc, attention.cc): the BLAS GEMM for float and
// double, the split of element-wise loops over the thread pool, and the row kernels (RMSNorm,
// rotary embedding, SwiGLU, exp) that both files share. Internal to src/model; the kernels trust
// their arguments (validation is in llama.cc).
//
// Vocabulary: `rows` are tokens (batch × seq flattened, token-major), `width` the length of one
// row. Loops that must vectorize at -O2 without -march (GCC's "very cheap" cost model only
// vectorizes loops whose trip count is a known multiple of the vector width) are written as a
// main part in groups of kLanes with a fixed inner loop, plus a scalar tail. Sums use kLanes
// independent partial sums combined in a fixed order, so results never depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#if __has_include(<cblas-openblas.h>)
#include <cblas-openblas.h>
#else
#include <cblas.h>
#endif

namespace mixz::model::detail {

inline constexpr int kLanes = 8;

// C[m, n] = alpha · op(A) · op(B) + beta · C, row-major; op(X) = Xᵀ when trans.
inline void gemm(bool transA, bool transB, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
                 int ldb, float beta, float* c, int ldc) {
    if (m == 0 || n == 0) return;
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, m, n, k, alpha,
                a, lda, b, ldb, beta, c, ldc);
}

inline void gemm(bool transA, bool transB, int m, int n, int k, double alpha, const double* a, int lda,
                 const double* b, int ldb, double beta, double* c, int ldc) {
    if (m == 0 || n == 0) return;
    cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, m, n, k, alpha,
                a, lda, b, ldb, beta, c, ldc);
}

// Runs fn(begin, end) over [0, items) in contiguous chunks of at least `grain` items on
// kernelThreads() threads. Chunk boundaries only decide who computes which rows, never how one
// result is computed.
void forChunks(std::size_t items, std::size_t grain, const std::function<void(std::size_t, std::size_t)>& fn);

// Runs task(i) for i in [0, tasks) on kernelThreads() threads.
void forTasks(std::size_t tasks, const std::function<void(std::size_t)>& task);

// The buffer, grown to at least n elements (never shrunk, so a steady state does not allocate).
template <typename T>
T* grow(std::vector<T>& buffer, std::size_t n) {
    if (buffer.size() < n) buffer.resize(n);
    return buffer.data();
}

template <typename T>
std::size_t capacityBytes(const std::vector<T>& buffer) {
    return buffer.capacity() * sizeof(T);
}

template <typename T>
void freeBuffer(std::vector<T>& buffer) {
    std::vector<T>().swap(buffer);
}

// e^x. float: a Cephes-style polynomial (relative error about 2e-7 on [-87, 88], inputs clamped
// there) written without calls or branches so that loops over it vectorize; double: std::exp
// (the double path is the reference of the finite-difference tests, not a fast path).
inline float expOf(float x) {
    x = std::min(std::max(x, -87.0f), 88.0f);
    // Round x·log2(e) to the nearest integer n with the 1.5·2²³ trick (exact under the default
    // rounding mode); its low mantissa bits then hold n.
    const float shifted = x * 1.44269504088896341f + 12582912.0f;
    const float n = shifted - 12582912.0f;
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    std::uint32_t bits;
    std::memcpy(&bits, &shifted, sizeof bits);
    const std::uint32_t scaleBits = (bits - 0x4B400000u + 127u) << 23;
    float scale;
    std::memcpy(&scale, &scaleBits, sizeof scale);
    return p * scale;
}

inline double expOf(double x) {
    return std::exp(x);
}

template <typename T>
T sumOfSquares(const T* x, int n) {
    T partial[kLanes] = {};
    int i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        for (int j = 0; j < kLanes; ++j) partial[j] += x[i + j] * x[i + j];
    }
    T sum = 0;
    for (int j = 0; j < kLanes; ++j) sum += partial[j];
    for (; i < n; ++i) sum += x[i] * x[i];
    return sum;
}

template <typename T>
T dot(const T* a, const T* b, int n) {
    T partial[kLanes] = {};
    int i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        for (int j = 0; j < kLanes; ++j) partial[j] += a[i + j] * b[i + j];
    }
    T sum = 0;
    for (int j = 0; j < kLanes; ++j) sum += partial[j];
    for (; i < n; ++i) sum += a[i] * b[i];
    return sum;
}

template <typename T>
T maxOf(const T* x, int n) {
    T best = x[0];
    for (int i = 1; i < n; ++i) best = std::max(best, x[i]);
    return best;
}

// x[i] = e^(x[i] - shift); returns the sum of the results.
template <typename T>
T expShiftedInPlace(T* x, int n, T shift) {
    T partial[kLanes] = {};
    int i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        for (int j = 0; j < kLanes; ++j) {
            x[i + j] = expOf(x[i + j] - shift);
            partial[j] += x[i + j];
        }
    }
    T sum = 0;
    for (int j = 0; j < kLanes; ++j) sum += partial[j];
    for (; i < n; ++i) {
        x[i] = expOf(x[i] - shift);
        sum += x[i];
    }
    return sum;
}

template <typename T>
void scaleInPlace(T* x, int n, T factor) {
    for (int i = 0; i < n; ++i) x[i] *= factor;
}

// RMSNorm of one row, as Hugging Face's LlamaRMSNorm computes it in T:
// rstd = 1 / sqrt(mean(x²) + eps), y = w · (x · rstd). Returns rstd.
template <typename T>
T rmsNormRow(const T* x, const T* w, int width, T eps, T* y) {
    const T rstd = T(1) / std::sqrt(sumOfSquares(x, width) / T(width) + eps);
    for (int i = 0; i < width; ++i) y[i] = w[i] * (x[i] * rstd);
    return rstd;
}

// The input gradient of one RMSNorm row: with g = dy ⊙ w and x̂ = x · rstd,
// dx = rstd · (g − x̂ · mean(g ⊙ x̂)) (+ residual when not null).
template <typename T>
void rmsNormBackwardRow(const T* x, const T* w, T rstd, const T* dy, const T* residual, int width, T* dx) {
    T partial[kLanes] = {};
    int i = 0;
    for (; i + kLanes <= width; i += kLanes) {
        for (int j = 0; j < kLanes; ++j) partial[j] += dy[i + j] * w[i + j] * x[i + j];
    }
    T sum = 0;
    for (int j = 0; j < kLanes; ++j) sum += partial[j];
    for (; i < width; ++i) sum += dy[i] * w[i] * x[i];
    // x̂ · mean(g ⊙ x̂) = x · rstd² · Σ(g ⊙ x) / width
    const T coefficient = sum * rstd * rstd / T(width);
    if (residual != nullptr) {
        for (i = 0; i < width; ++i) dx[i] = residual[i] + rstd * (dy[i] * w[i] - x[i] * coefficient);
    } else {
        for (i = 0; i < width; ++i) dx[i] = rstd * (dy[i] * w[i] - x[i] * coefficient);
    }
}

// Rotary embedding of one head (rotate_half pairs (i, i + half)) at one position, in place.
// inverse: the transposed rotation (the backward of the forward rotation).
template <typename T>
void ropeRow(T* x, const T* cosines, const T* sines, int half, bool inverse) {
    T* lo = x;
    T* hi = x + half;
    if (!inverse) {
        for (int i = 0; i < half; ++i) {
            const T a = lo[i];
            const T b = hi[i];
            lo[i] = a * cosines[i] - b * sines[i];
            hi[i] = b * cosines[i] + a * sines[i];
        }
    } else {
        for (int i = 0; i < half; ++i) {
            const T a = lo[i];
            const T b = hi[i];
            lo[i] = a * cosines[i] + b * sines[i];
            hi[i] = b * cosines[i] - a * sines[i];
        }
    }
}

// SwiGLU of one row: act = silu(gate) ⊙ up, silu(g) = g · σ(g).
template <typename T>
void swigluRow(const T* gate, const T* up, int width, T* act) {
    for (int i = 0; i < width; ++i) {
        const T sigmoid = T(1) / (T(1) + expOf(-gate[i]));
        act[i] = gate[i] * sigmoid * up[i];
    }
}

// Its backward: dGate = dAct ⊙ up ⊙ σ(g)(1 + g(1 − σ(g))), dUp = dAct ⊙ silu(g).
// dGate may alias dAct.
template <typename T>
void swigluBackwardRow(const T* gate, const T* up, const T* dAct, int width, T* dGate, T* dUp) {
    for (int i = 0; i < width; ++i) {
        const T g = gate[i];
        const T sigmoid = T(1) / (T(1) + expOf(-g));
        const T d = dAct[i];
        dUp[i] = d * g * sigmoid;
        dGate[i] = d * up[i] * sigmoid * (T(1) + g * (T(1) - sigmoid));
    }
}

} // namespace mixz::model::detail

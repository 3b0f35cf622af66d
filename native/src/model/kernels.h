// The building blocks of the decoder kernels (llama.cc, attention.cc): the BLAS GEMM for float and
// double, the split of element-wise loops over the thread pool, and the row kernels (RMSNorm,
// rotary embedding, SwiGLU, exp) that both files share. Internal to src/model; the kernels trust
// their arguments (checked by llama.cc, with mixz/model/kernel_arguments.h).
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

#include "mixz/model/elementwise.h"

#if __has_include(<cblas-openblas.h>)
#include <cblas-openblas.h>
#else
#include <cblas.h>
#endif

namespace mixz::model::detail {

inline constexpr int kLanes = 8;

// f(i) for i in [0, n): groups of kLanes with a fixed inner count (which GCC vectorizes at -O2),
// then the tail one by one.
template <typename F>
inline void forLanes(int n, F&& f) {
    int i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        for (int j = 0; j < kLanes; ++j) f(i + j);
    }
    for (; i < n; ++i) f(i);
}

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

// gemm with the m rows of C computed in independent slices of `sliceRows` (fixed, so the result
// does not depend on the thread count) on kernelThreads() threads, when OpenBLAS runs single
// threaded; when OpenBLAS has threads of its own, one call that it divides among them (slicing on
// top of its threads would run several threaded GEMMs at once on the same cores).
template <typename T>
void gemmSliced(bool transA, bool transB, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb,
                T beta, T* c, int ldc, int sliceRows);

// Runs fn(begin, end) over [0, items) in contiguous chunks of at least `grain` items on
// kernelThreads() threads. Chunk boundaries only decide who computes which rows, never how one
// result is computed.
void forChunks(std::size_t items, std::size_t grain, const std::function<void(std::size_t, std::size_t)>& fn);

// Runs task(i) for i in [0, tasks) on kernelThreads() threads.
void forTasks(std::size_t tasks, const std::function<void(std::size_t)>& task);

// forTasks for tasks that call BLAS: on the calling thread alone when OpenBLAS has threads of its
// own. Several threaded GEMMs at once make OpenBLAS's dispatcher spin on its busy workers (most
// of a step went to exec_blas_async in a profile); one at a time, OpenBLAS divides each.
void forBlasTasks(std::size_t tasks, const std::function<void(std::size_t)>& task);

template <typename T>
void gemmSliced(bool transA, bool transB, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb,
                T beta, T* c, int ldc, int sliceRows) {
    if (openblas_get_num_threads() > 1 || m <= sliceRows) {
        gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    const std::size_t slices = (static_cast<std::size_t>(m) + sliceRows - 1) / sliceRows;
    forTasks(slices, [&](std::size_t slice) {
        const int first = static_cast<int>(slice) * sliceRows;
        const int rows = std::min(sliceRows, m - first);
        // Row `first` of op(A): row `first` of A, or column `first` of A when transposed.
        const T* aSlice = transA ? a + first : a + static_cast<std::size_t>(first) * lda;
        gemm(transA, transB, rows, n, k, alpha, aSlice, lda, b, ldb, beta, c + static_cast<std::size_t>(first) * ldc,
             ldc);
    });
}

// LoRA dropout masks: inverted dropout of a LoRA branch's input [rows, in] (PEFT's lora_dropout),
// drawn without any RNG state. Element i (= row · in + column) of the input is kept when the high
// 32 bits of mix64(key + (i + 1) · golden), key = mix64(seed), reach `threshold` = p · 2³², and a
// kept element is scaled by 1 / (1 − p). The mask is a pure function of (seed, i): a backward
// recomputes exactly what its forward drew, and neither depends on the thread count.
struct DropoutMask {
    double probability = 0; // 0: no dropout (the mask keeps everything, unscaled)
    std::uint64_t key = 0;
    std::uint32_t threshold = 0;

    // The arithmetic (key, threshold, keep decision, scale) is mixz/model/elementwise.h's, shared
    // with the CUDA kernels.
    static DropoutMask of(double probability, std::uint64_t seed) {
        DropoutMask mask;
        if (!(probability > 0)) return mask;
        mask.probability = probability;
        mask.key = elementwise::dropoutKey(seed);
        mask.threshold = elementwise::dropoutThreshold(probability);
        return mask;
    }

    bool active() const { return probability > 0; }

    bool keeps(std::size_t index) const {
        return elementwise::dropoutKeeps(key, threshold, static_cast<std::uint64_t>(index));
    }

    // out[i] = mask_i · x[i] / (1 − p) for the elements [begin, end) of the input; out may alias x.
    // accumulate: out[i] += instead.
    template <typename T>
    void apply(std::size_t begin, std::size_t end, const T* x, T* out, bool accumulate) const {
        const T scale = elementwise::dropoutScale<T>(probability);
        for (std::size_t i = begin; i < end; ++i) {
            const T value = elementwise::dropoutApply(keeps(i), x[i], scale);
            out[i] = accumulate ? out[i] + value : value;
        }
    }
};

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

// e^x: elementwise::expOf (float: a branch-free polynomial that vectorizes; double: std::exp).
using elementwise::expOf;

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

// The largest of x[0..n), n ≥ 1 (NaN-free input).
template <typename T>
T maxOf(const T* x, int n) {
    T partial[kLanes];
    for (int j = 0; j < kLanes; ++j) partial[j] = x[0];
    int i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        for (int j = 0; j < kLanes; ++j) partial[j] = x[i + j] > partial[j] ? x[i + j] : partial[j];
    }
    T best = partial[0];
    for (int j = 1; j < kLanes; ++j) best = partial[j] > best ? partial[j] : best;
    for (; i < n; ++i) best = x[i] > best ? x[i] : best;
    return best;
}

// x[i] = e^(x[i] - shift); returns the sum of the results.
template <typename T>
T expShiftedInPlace(T* x, int n, T shift) {
    forLanes(n, [&](int i) { x[i] = elementwise::expShifted(x[i], shift); });
    T partial[kLanes] = {};
    int i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        for (int j = 0; j < kLanes; ++j) partial[j] += x[i + j];
    }
    T sum = 0;
    for (int j = 0; j < kLanes; ++j) sum += partial[j];
    for (; i < n; ++i) sum += x[i];
    return sum;
}

template <typename T>
void scaleInPlace(T* x, int n, T factor) {
    forLanes(n, [&](int i) { x[i] *= factor; });
}

// RMSNorm of one row, as Hugging Face's LlamaRMSNorm computes it in T:
// rstd = 1 / sqrt(mean(x²) + eps), y = w · (x · rstd). Returns rstd.
template <typename T>
T rmsNormRow(const T* __restrict x, const T* __restrict w, int width, T eps, T* __restrict y) {
    const T rstd = elementwise::rmsInverse(sumOfSquares(x, width), width, eps);
    forLanes(width, [&](int i) { y[i] = elementwise::rmsNormScale(x[i], w[i], rstd); });
    return rstd;
}

// The input gradient of one RMSNorm row: with g = dy ⊙ w and x̂ = x · rstd,
// dx = rstd · (g − x̂ · mean(g ⊙ x̂)) (+ residual when not null).
template <typename T>
void rmsNormBackwardRow(const T* __restrict x, const T* __restrict w, T rstd, const T* __restrict dy,
                        const T* __restrict residual, int width, T* __restrict dx) {
    T partial[kLanes] = {};
    int i = 0;
    for (; i + kLanes <= width; i += kLanes) {
        for (int j = 0; j < kLanes; ++j) partial[j] += elementwise::rmsNormBackwardTerm(dy[i + j], w[i + j], x[i + j]);
    }
    T sum = 0;
    for (int j = 0; j < kLanes; ++j) sum += partial[j];
    for (; i < width; ++i) sum += elementwise::rmsNormBackwardTerm(dy[i], w[i], x[i]);
    // x̂ · mean(g ⊙ x̂) = x · rstd² · Σ(g ⊙ x) / width
    const T coefficient = elementwise::rmsNormBackwardCoefficient(sum, rstd, width);
    if (residual != nullptr) {
        forLanes(width, [&](int k) {
            dx[k] = elementwise::rmsNormInputGrad(dy[k], w[k], x[k], rstd, coefficient, residual[k]);
        });
    } else {
        forLanes(width, [&](int k) { dx[k] = elementwise::rmsNormInputGrad(dy[k], w[k], x[k], rstd, coefficient); });
    }
}

// Rotary embedding of one head (rotate_half pairs (i, i + half)) at one position, in place.
// inverse: the transposed rotation (the backward of the forward rotation).
template <typename T>
void ropeRow(T* x, const T* __restrict cosines, const T* __restrict sines, int half, bool inverse) {
    T* __restrict lo = x;
    T* __restrict hi = x + half;
    // Two loops with the direction fixed in each, so the branch in ropeRotate folds away and each
    // loop vectorizes.
    if (!inverse) {
        forLanes(half, [&](int i) {
            const elementwise::RopePair<T> r = elementwise::ropeRotate(lo[i], hi[i], cosines[i], sines[i], false);
            lo[i] = r.lo;
            hi[i] = r.hi;
        });
    } else {
        forLanes(half, [&](int i) {
            const elementwise::RopePair<T> r = elementwise::ropeRotate(lo[i], hi[i], cosines[i], sines[i], true);
            lo[i] = r.lo;
            hi[i] = r.hi;
        });
    }
}

// SwiGLU of one row: act = silu(gate) ⊙ up, silu(g) = g · σ(g).
template <typename T>
void swigluRow(const T* gate, const T* up, int width, T* act) {
    forLanes(width, [&](int i) { act[i] = elementwise::swiglu(gate[i], up[i]); });
}

// Its backward: dGate = dAct ⊙ up ⊙ σ(g)(1 + g(1 − σ(g))), dUp = dAct ⊙ silu(g).
// dGate may alias dAct.
template <typename T>
void swigluBackwardRow(const T* gate, const T* up, const T* dAct, int width, T* dGate, T* dUp) {
    forLanes(width, [&](int i) {
        const elementwise::SwigluGrad<T> grad = elementwise::swigluBackward(gate[i], up[i], dAct[i]);
        dUp[i] = grad.up;
        dGate[i] = grad.gate;
    });
}

} // namespace mixz::model::detail

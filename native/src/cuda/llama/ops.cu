// NOT YET RUN ON A GPU (see llama_device.h).
//
// The element-wise and row kernels of the LLaMA layers, the row-major GEMM mapping and the
// workspace registry. Row kernels run one block of kThreads threads per row; each thread walks its
// row with stride kThreads (coalesced), and block reductions combine the threads' partial results
// in a fixed tree, so results are deterministic. Element-wise kernels are grid-stride loops over flat arrays.
#include "ops.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <unordered_map>

#include "mixz/common/error.h"
#include "mixz/model/elementwise.h"

namespace mixz::cuda::llamadev {

namespace ew = model::elementwise;

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Rows per partial sum of the norm weight gradients: the CPU's kNormChunkRows, so the order of
// additions (within a chunk by row, then the chunks in order) is the CPU's.
constexpr std::size_t kNormChunkRows = 32;

// Blocks for a grid-stride loop over n elements: enough to fill the device, no more.
unsigned blocksFor(const DeviceContext& ctx, std::size_t n) {
    const std::size_t wanted = (n + kThreads - 1) / kThreads;
    const std::size_t cap = static_cast<std::size_t>(std::max(ctx.multiprocessors, 1)) * 16;
    return static_cast<unsigned>(std::max<std::size_t>(1, std::min(wanted, cap)));
}

// The sum of v over the block (every thread gets it). `shared` holds kWarps floats; the
// __syncthreads at the start lets a caller reduce twice in a row with the same buffer.
__device__ float blockSum(float v, float* shared) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) shared[threadIdx.x >> 5] = v;
    __syncthreads();
    float total = shared[0];
    for (int w = 1; w < kWarps; ++w) total += shared[w];
    return total;
}

__device__ float blockMax(float v, float* shared) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, offset));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) shared[threadIdx.x >> 5] = v;
    __syncthreads();
    float best = shared[0];
    for (int w = 1; w < kWarps; ++w) best = fmaxf(best, shared[w]);
    return best;
}

// ---------------------------------------------------------------------------------------------
// Kernels

__global__ void rmsNormForwardKernel(int width, const float* __restrict__ x, const float* __restrict__ w, float eps,
                                     float* __restrict__ y, float* __restrict__ rstd) {
    __shared__ float shared[kWarps];
    const std::size_t row = blockIdx.x;
    const float* xr = x + row * width;
    float* yr = y + row * width;
    float sum = 0;
    for (int i = threadIdx.x; i < width; i += kThreads) sum += xr[i] * xr[i];
    const float inverse = ew::rmsInverse(blockSum(sum, shared), width, eps);
    for (int i = threadIdx.x; i < width; i += kThreads) yr[i] = ew::rmsNormScale(xr[i], w[i], inverse);
    if (threadIdx.x == 0) rstd[row] = inverse;
}

__global__ void rmsNormBackwardKernel(int width, const float* __restrict__ x, const float* __restrict__ w,
                                      const float* __restrict__ rstd, const float* __restrict__ dy,
                                      const float* __restrict__ residual, float* __restrict__ dx) {
    __shared__ float shared[kWarps];
    const std::size_t row = blockIdx.x;
    const float* xr = x + row * width;
    const float* dyr = dy + row * width;
    float* dxr = dx + row * width;
    const float s = rstd[row];
    float sum = 0;
    for (int i = threadIdx.x; i < width; i += kThreads) sum += ew::rmsNormBackwardTerm(dyr[i], w[i], xr[i]);
    const float coefficient = ew::rmsNormBackwardCoefficient(blockSum(sum, shared), s, width);
    if (residual != nullptr) {
        const float* res = residual + row * width;
        for (int i = threadIdx.x; i < width; i += kThreads) {
            dxr[i] = ew::rmsNormInputGrad(dyr[i], w[i], xr[i], s, coefficient, res[i]);
        }
    } else {
        for (int i = threadIdx.x; i < width; i += kThreads) {
            dxr[i] = ew::rmsNormInputGrad(dyr[i], w[i], xr[i], s, coefficient);
        }
    }
}

// partial[c, i] = Σ rows of chunk c (in order) dy ⊙ x·rstd; grid (columns / kThreads, chunks).
// Threads of a warp read consecutive columns of one row: coalesced.
__global__ void normWeightPartialKernel(std::size_t rows, int width, const float* __restrict__ x,
                                        const float* __restrict__ rstd, const float* __restrict__ dy,
                                        float* __restrict__ partial) {
    const int i = blockIdx.x * kThreads + threadIdx.x;
    if (i >= width) return;
    const std::size_t chunk = blockIdx.y;
    const std::size_t begin = chunk * kNormChunkRows;
    const std::size_t end = begin + kNormChunkRows < rows ? begin + kNormChunkRows : rows;
    float sum = 0;
    for (std::size_t r = begin; r < end; ++r) sum += ew::rmsNormWeightGradTerm(dy[r * width + i], x[r * width + i], rstd[r]);
    partial[chunk * width + i] = sum;
}

__global__ void normWeightSumKernel(std::size_t chunks, int width, const float* __restrict__ partial,
                                    float* __restrict__ dw) {
    const int i = blockIdx.x * kThreads + threadIdx.x;
    if (i >= width) return;
    float sum = partial[i];
    for (std::size_t c = 1; c < chunks; ++c) sum += partial[c * width + i];
    dw[i] = sum;
}

// One thread per (row, head, pair).
__global__ void ropeKernel(std::size_t pairs, int seq, int past, int heads, int half, const float* __restrict__ cosines,
                           const float* __restrict__ sines, float* __restrict__ x, bool inverse) {
    const std::size_t perRow = static_cast<std::size_t>(heads) * half;
    for (std::size_t t = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; t < pairs;
         t += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
        const std::size_t row = t / perRow;
        const int within = static_cast<int>(t % perRow);
        const int head = within / half;
        const int i = within % half;
        const std::size_t position = static_cast<std::size_t>(past) + row % seq;
        float* base = x + row * (perRow * 2) + static_cast<std::size_t>(head) * half * 2;
        const ew::RopePair<float> r =
            ew::ropeRotate(base[i], base[i + half], cosines[position * half + i], sines[position * half + i], inverse);
        base[i] = r.lo;
        base[i + half] = r.hi;
    }
}

__global__ void swigluForwardKernel(std::size_t n, const float* __restrict__ gate, const float* __restrict__ up,
                                    float* __restrict__ act) {
    for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
        act[i] = ew::swiglu(gate[i], up[i]);
    }
}

// dGate may alias dAct: each element is read before it is written, by the same thread.
__global__ void swigluBackwardKernel(std::size_t n, const float* gate, const float* up, const float* dAct,
                                     float* dGate, float* dUp) {
    for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
        const ew::SwigluGrad<float> g = ew::swigluBackward(gate[i], up[i], dAct[i]);
        dUp[i] = g.up;
        dGate[i] = g.gate;
    }
}

__global__ void dropoutKernel(std::size_t n, std::uint64_t key, std::uint32_t threshold, float scale,
                              const float* __restrict__ x, float* __restrict__ out, bool accumulate) {
    for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
        const float value = ew::dropoutApply(ew::dropoutKeeps(key, threshold, i), x[i], scale);
        out[i] = accumulate ? out[i] + value : value;
    }
}

__global__ void addKernel(std::size_t n, float* __restrict__ a, const float* __restrict__ b) {
    for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
        a[i] += b[i];
    }
}

// One block per row; grid batch · queries (1-D: grid.y is limited to 65535, and batch alone may
// pass that while batch · seq ≤ INT_MAX, what checkShape allows, fits grid.x).
__global__ void causalSoftmaxKernel(int queries, int keys, int past, float* scores, long long batchStride) {
    __shared__ float shared[kWarps];
    const int t = static_cast<int>(blockIdx.x % static_cast<unsigned>(queries));
    const long long b = blockIdx.x / static_cast<unsigned>(queries);
    float* row = scores + b * batchStride + static_cast<long long>(t) * keys;
    const int visible = past + t + 1;
    float largest = -INFINITY;
    for (int j = threadIdx.x; j < visible; j += kThreads) largest = fmaxf(largest, row[j]);
    largest = blockMax(largest, shared);
    float sum = 0;
    for (int j = threadIdx.x; j < visible; j += kThreads) {
        const float e = ew::expShifted(row[j], largest);
        row[j] = e;
        sum += e;
    }
    const float inverse = ew::softmaxInverseSum(blockSum(sum, shared));
    for (int j = threadIdx.x; j < keys; j += kThreads) row[j] = j < visible ? ew::softmaxNormalize(row[j], inverse) : 0.0f;
}

// One block per row; grid batch · seq (1-D, as causalSoftmaxKernel).
__global__ void softmaxBackwardKernel(int seq, const float* probs, long long probsStride, float* dS, float scale) {
    __shared__ float shared[kWarps];
    const int t = static_cast<int>(blockIdx.x % static_cast<unsigned>(seq));
    const long long b = blockIdx.x / static_cast<unsigned>(seq);
    const float* p = probs + b * probsStride + static_cast<long long>(t) * seq;
    float* d = dS + b * static_cast<long long>(seq) * seq + static_cast<long long>(t) * seq;
    const int visible = t + 1;
    float weighted = 0;
    for (int j = threadIdx.x; j < visible; j += kThreads) weighted += p[j] * d[j];
    weighted = blockSum(weighted, shared);
    for (int j = threadIdx.x; j < seq; j += kThreads) d[j] = j < visible ? ew::softmaxBackward(p[j], d[j], weighted, scale) : 0.0f;
}

// One block per row. Three passes over the row (max, exp and sum, scale): for a 128k vocabulary
// this is bandwidth-bound; a fused online-softmax pass would read the logits once fewer.
__global__ void crossEntropyKernel(int vocab, float* logits, const std::int32_t* labels, float share, double* rowLoss) {
    __shared__ float shared[kWarps];
    const std::size_t r = blockIdx.x;
    float* row = logits + r * vocab;
    const std::int32_t label = labels[r];
    if (label < 0) {
        for (int j = threadIdx.x; j < vocab; j += kThreads) row[j] = 0.0f;
        if (threadIdx.x == 0) rowLoss[r] = 0;
        return;
    }
    const float target = row[label]; // read by every thread before any write (blockMax syncs)
    float largest = -INFINITY;
    for (int j = threadIdx.x; j < vocab; j += kThreads) largest = fmaxf(largest, row[j]);
    largest = blockMax(largest, shared);
    float sum = 0;
    for (int j = threadIdx.x; j < vocab; j += kThreads) {
        const float e = ew::expShifted(row[j], largest);
        row[j] = e;
        sum += e;
    }
    sum = blockSum(sum, shared);
    const float factor = ew::crossEntropyGradFactor(share, sum);
    for (int j = threadIdx.x; j < vocab; j += kThreads) row[j] = ew::crossEntropyGrad(row[j], factor);
    __syncthreads();
    if (threadIdx.x == 0) {
        row[label] = ew::crossEntropyLabelGrad(row[label], share);
        rowLoss[r] = ew::crossEntropyRowLoss(largest, sum, target);
    }
}

// One block per token row (grid-stride over tokens in y would not be needed: tokens < 2³¹).
__global__ void gatherKernel(int hidden, const std::int32_t* ids, const float* __restrict__ table,
                             float* __restrict__ out) {
    const std::size_t t = blockIdx.x;
    const float* from = table + static_cast<std::size_t>(ids[t]) * hidden;
    float* to = out + t * hidden;
    for (int j = threadIdx.x; j < hidden; j += kThreads) to[j] = from[j];
}

// grid (unique ids, hidden / kThreads): row u's columns summed over its positions in token order
// from 0, as the CPU's loop adds them.
__global__ void scatterKernel(int uniqueCount, int hidden, const std::int32_t* groups, const float* __restrict__ dOut,
                              float* __restrict__ dTable) {
    const int u = blockIdx.x;
    const int j = blockIdx.y * kThreads + threadIdx.x;
    if (j >= hidden) return;
    const std::int32_t* offsets = groups + uniqueCount;
    const std::int32_t* positions = offsets + uniqueCount + 1;
    float sum = 0;
    for (int p = offsets[u]; p < offsets[u + 1]; ++p) sum += dOut[static_cast<std::size_t>(positions[p]) * hidden + j];
    dTable[static_cast<std::size_t>(groups[u]) * hidden + j] = sum;
}

} // namespace

// ---------------------------------------------------------------------------------------------
// Buffers and the workspace

void DeviceBuffer::release() noexcept {
    if (data_ == nullptr) return;
    cudaStreamSynchronize(ctx_->stream); // no throw from here: a failed stream fails the next call
    ctx_->allocator->free(data_);
    data_ = nullptr;
    bytes_ = 0;
}

void* DeviceBuffer::growBytes(DeviceContext& ctx, std::size_t bytes) {
    bytes = std::max<std::size_t>(bytes, 1);
    if (data_ != nullptr && bytes <= bytes_) return data_;
    if (data_ != nullptr) {
        MIXZ_CUDA_CHECK(cudaStreamSynchronize(ctx_->stream));
        ctx_->allocator->free(data_);
        data_ = nullptr;
        bytes_ = 0;
    }
    ctx_ = &ctx;
    data_ = ctx.allocator->allocate(bytes);
    bytes_ = bytes;
    return data_;
}

Dropout Dropout::of(double probability, std::uint64_t seed) {
    Dropout mask;
    if (!(probability > 0)) return mask;
    mask.active = true;
    mask.key = ew::dropoutKey(seed);
    mask.threshold = ew::dropoutThreshold(probability);
    mask.scale = ew::dropoutScale<float>(probability);
    return mask;
}

std::size_t LayerStore::bytes() const {
    std::size_t total = 0;
    for (const DeviceBuffer* b : {&x, &rstd1, &xn1, &q, &k, &v, &probs, &ctx, &h1, &rstd2, &xn2, &gate, &up, &act}) {
        total += b->bytes();
    }
    for (const DeviceBuffer& b : lora) total += b.bytes();
    return total;
}

void LayerStore::release() noexcept {
    for (DeviceBuffer* b : {&x, &rstd1, &xn1, &q, &k, &v, &probs, &ctx, &h1, &rstd2, &xn2, &gate, &up, &act}) {
        b->release();
    }
    for (DeviceBuffer& b : lora) b.release();
    batch = 0;
}

std::size_t HeadStore::bytes() const {
    return x.bytes() + rstd.bytes() + xn.bytes() + lora.bytes() + dLogits.bytes();
}

void HeadStore::release() noexcept {
    for (DeviceBuffer* b : {&x, &rstd, &xn, &lora, &dLogits}) b->release();
    batch = 0;
}

namespace {

std::mutex gWorkspacesMutex;

std::unordered_map<const DeviceContext*, std::unique_ptr<Workspace>>& workspaces() {
    static auto* map = new std::unordered_map<const DeviceContext*, std::unique_ptr<Workspace>>();
    return *map; // never destroyed: buffers must not be freed after the allocators at exit
}

} // namespace

Workspace& workspaceOf(DeviceContext& ctx) {
    std::lock_guard<std::mutex> lock(gWorkspacesMutex);
    std::unique_ptr<Workspace>& slot = workspaces()[&ctx];
    if (slot && slot->allocator != ctx.allocator) {
        // A context at the address of one destroyed without releaseWorkspace: its memory belonged to
        // an allocator that is gone, so it cannot be freed; forget it.
        (void)slot.release();
    }
    if (!slot) {
        slot = std::make_unique<Workspace>();
        slot->allocator = ctx.allocator;
    }
    return *slot;
}

void dropWorkspace(DeviceContext& ctx) {
    std::unique_ptr<Workspace> doomed;
    {
        std::lock_guard<std::mutex> lock(gWorkspacesMutex);
        auto it = workspaces().find(&ctx);
        if (it == workspaces().end()) return;
        doomed = std::move(it->second);
        workspaces().erase(it);
    }
    if (doomed->allocator != ctx.allocator) (void)doomed.release();
    // else its destructor frees the buffers (after synchronizing the stream)
}

void ensureRope(DeviceContext& ctx, Workspace& ws, const model::LlamaDims& dims) {
    if (ws.ropeBuilt && model::sameRotary(ws.ropeDims, dims) && ws.ropePositions >= dims.maxSeq) return;
    const int headDim = dims.headDim();
    const int half = headDim / 2;
    const int positions = dims.maxSeq;
    std::vector<float> cosines(static_cast<std::size_t>(positions) * half), sines(cosines.size());
    for (int i = 0; i < half; ++i) {
        // The CPU's definition (scaling included), so both backends rotate by the same angles.
        const double inverseFrequency = model::ropeInverseFrequency(dims, i);
        for (int p = 0; p < positions; ++p) {
            const double angle = ew::ropeAngle(p, inverseFrequency);
            cosines[static_cast<std::size_t>(p) * half + i] = static_cast<float>(std::cos(angle));
            sines[static_cast<std::size_t>(p) * half + i] = static_cast<float>(std::sin(angle));
        }
    }
    float* c = ws.ropeCos.grow<float>(ctx, cosines.size());
    float* s = ws.ropeSin.grow<float>(ctx, sines.size());
    MIXZ_CUDA_CHECK(cudaMemcpyAsync(c, cosines.data(), cosines.size() * sizeof(float), cudaMemcpyHostToDevice, ctx.stream));
    MIXZ_CUDA_CHECK(cudaMemcpyAsync(s, sines.data(), sines.size() * sizeof(float), cudaMemcpyHostToDevice, ctx.stream));
    // The host vectors die here: wait for the copies (pageable copies may still read them).
    MIXZ_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
    ws.ropeDims = dims;
    ws.ropePositions = positions;
    ws.ropeBuilt = true;
}

// ---------------------------------------------------------------------------------------------
// GEMMs

void gemm(DeviceContext& ctx, bool transA, bool transB, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
    if (m == 0 || n == 0) return;
    namespace cb = cudalib::cublas;
    MIXZ_CUBLAS_CHECK(ctx, ctx.api->gemmEx(ctx.blas, transB ? cb::kOpT : cb::kOpN, transA ? cb::kOpT : cb::kOpN, n, m, k,
                                           &alpha, b, cb::kR32F, ldb, a, cb::kR32F, lda, &beta, c, cb::kR32F, ldc,
                                           ctx.gemmCompute, cb::kGemmDefault));
}

void gemmStridedBatched(DeviceContext& ctx, bool transA, bool transB, int m, int n, int k, float alpha,
                        const float* a, int lda, long long strideA, const float* b, int ldb, long long strideB,
                        float beta, float* c, int ldc, long long strideC, int count) {
    if (m == 0 || n == 0 || count == 0) return;
    namespace cb = cudalib::cublas;
    MIXZ_CUBLAS_CHECK(ctx, ctx.api->gemmStridedBatchedEx(ctx.blas, transB ? cb::kOpT : cb::kOpN,
                                                         transA ? cb::kOpT : cb::kOpN, n, m, k, &alpha, b, cb::kR32F,
                                                         ldb, strideB, a, cb::kR32F, lda, strideA, &beta, c, cb::kR32F,
                                                         ldc, strideC, count, ctx.gemmCompute, cb::kGemmDefault));
}

// ---------------------------------------------------------------------------------------------
// Launchers

void rmsNormForward(DeviceContext& ctx, std::size_t rows, int width, const float* x, const float* w, float eps,
                    float* y, float* rstd) {
    if (rows == 0) return;
    rmsNormForwardKernel<<<static_cast<unsigned>(rows), kThreads, 0, ctx.stream>>>(width, x, w, eps, y, rstd);
    MIXZ_CUDA_LAUNCH_CHECK("rmsNormForward");
}

void rmsNormBackward(DeviceContext& ctx, Workspace& ws, std::size_t rows, int width, const float* x, const float* w,
                     const float* rstd, const float* dy, const float* residual, float* dx, float* dw) {
    if (rows == 0) return;
    if (dx != nullptr) {
        rmsNormBackwardKernel<<<static_cast<unsigned>(rows), kThreads, 0, ctx.stream>>>(width, x, w, rstd, dy,
                                                                                        residual, dx);
        MIXZ_CUDA_LAUNCH_CHECK("rmsNormBackward");
    }
    if (dw == nullptr) return;
    const std::size_t chunks = (rows + kNormChunkRows - 1) / kNormChunkRows;
    float* partial = ws.slot(ctx, kNormPartials, chunks * width);
    const unsigned columnBlocks = static_cast<unsigned>((width + kThreads - 1) / kThreads);
    // chunks ≤ 65535 (grid.y) covers 2M rows per call.
    MIXZ_ENFORCE(chunks <= 65535, "rmsNormBackward: ", rows, " rows are more than the norm gradient kernel takes");
    normWeightPartialKernel<<<dim3(columnBlocks, static_cast<unsigned>(chunks)), kThreads, 0, ctx.stream>>>(
        rows, width, x, rstd, dy, partial);
    MIXZ_CUDA_LAUNCH_CHECK("normWeightPartial");
    normWeightSumKernel<<<columnBlocks, kThreads, 0, ctx.stream>>>(chunks, width, partial, dw);
    MIXZ_CUDA_LAUNCH_CHECK("normWeightSum");
}

void rope(DeviceContext& ctx, const Workspace& ws, std::size_t rows, int seq, int past, int heads, int headDim,
          float* x, bool inverse) {
    const int half = headDim / 2;
    const std::size_t pairs = rows * heads * half;
    if (pairs == 0) return;
    ropeKernel<<<blocksFor(ctx, pairs), kThreads, 0, ctx.stream>>>(pairs, seq, past, heads, half, ws.ropeCos.as<float>(),
                                                                   ws.ropeSin.as<float>(), x, inverse);
    MIXZ_CUDA_LAUNCH_CHECK("rope");
}

void swigluForward(DeviceContext& ctx, std::size_t n, const float* gate, const float* up, float* act) {
    if (n == 0) return;
    swigluForwardKernel<<<blocksFor(ctx, n), kThreads, 0, ctx.stream>>>(n, gate, up, act);
    MIXZ_CUDA_LAUNCH_CHECK("swigluForward");
}

void swigluBackward(DeviceContext& ctx, std::size_t n, const float* gate, const float* up, const float* dAct,
                    float* dGate, float* dUp) {
    if (n == 0) return;
    swigluBackwardKernel<<<blocksFor(ctx, n), kThreads, 0, ctx.stream>>>(n, gate, up, dAct, dGate, dUp);
    MIXZ_CUDA_LAUNCH_CHECK("swigluBackward");
}

void dropoutApply(DeviceContext& ctx, std::size_t n, const Dropout& mask, const float* x, float* out,
                  bool accumulate) {
    if (n == 0) return;
    dropoutKernel<<<blocksFor(ctx, n), kThreads, 0, ctx.stream>>>(n, mask.key, mask.threshold, mask.scale, x, out,
                                                                  accumulate);
    MIXZ_CUDA_LAUNCH_CHECK("dropout");
}

void addInPlace(DeviceContext& ctx, std::size_t n, float* a, const float* b) {
    if (n == 0) return;
    addKernel<<<blocksFor(ctx, n), kThreads, 0, ctx.stream>>>(n, a, b);
    MIXZ_CUDA_LAUNCH_CHECK("add");
}

void causalSoftmax(DeviceContext& ctx, int batch, int queries, int keys, int past, float* scores,
                   long long batchStride) {
    if (batch == 0 || queries == 0) return;
    // batch · queries ≤ INT_MAX (checkShape), within grid.x's 2³¹ − 1.
    causalSoftmaxKernel<<<static_cast<unsigned>(static_cast<long long>(batch) * queries), kThreads, 0, ctx.stream>>>(
        queries, keys, past, scores, batchStride);
    MIXZ_CUDA_LAUNCH_CHECK("causalSoftmax");
}

void softmaxBackward(DeviceContext& ctx, int batch, int seq, const float* probs, long long probsStride, float* dS,
                     float scale) {
    if (batch == 0 || seq == 0) return;
    softmaxBackwardKernel<<<static_cast<unsigned>(static_cast<long long>(batch) * seq), kThreads, 0, ctx.stream>>>(
        seq, probs, probsStride, dS, scale);
    MIXZ_CUDA_LAUNCH_CHECK("softmaxBackward");
}

void crossEntropy(DeviceContext& ctx, std::size_t rows, int vocab, float* logits, const std::int32_t* labels,
                  float share, double* rowLoss) {
    if (rows == 0) return;
    crossEntropyKernel<<<static_cast<unsigned>(rows), kThreads, 0, ctx.stream>>>(vocab, logits, labels, share, rowLoss);
    MIXZ_CUDA_LAUNCH_CHECK("crossEntropy");
}

void embeddingGather(DeviceContext& ctx, std::size_t tokens, int hidden, const std::int32_t* ids, const float* table,
                     float* out) {
    if (tokens == 0) return;
    gatherKernel<<<static_cast<unsigned>(tokens), kThreads, 0, ctx.stream>>>(hidden, ids, table, out);
    MIXZ_CUDA_LAUNCH_CHECK("embeddingGather");
}

void embeddingScatter(DeviceContext& ctx, int uniqueCount, int hidden, const std::int32_t* groups,
                      std::size_t tokens, const float* dOut, float* dTable) {
    (void)tokens;
    if (uniqueCount == 0) return;
    const unsigned columnBlocks = static_cast<unsigned>((hidden + kThreads - 1) / kThreads);
    scatterKernel<<<dim3(static_cast<unsigned>(uniqueCount), columnBlocks), kThreads, 0, ctx.stream>>>(
        uniqueCount, hidden, groups, dOut, dTable);
    MIXZ_CUDA_LAUNCH_CHECK("embeddingScatter");
}

// ---------------------------------------------------------------------------------------------
// Linear layers with optional LoRA (the CPU's linearForward / linearBackward, GEMM for GEMM)

void linearForward(DeviceContext& ctx, Workspace& ws, int rows, int in, int out, const model::LinearParams<float>& p,
                   const float* x, float* y, float* hidden, const Dropout& mask) {
    gemm(ctx, false, true, rows, out, in, 1.0f, x, in, p.weight, in, 0.0f, y, out);
    if (!hasLora(p)) return;
    const float* loraInput = x;
    if (mask.active) {
        const std::size_t n = static_cast<std::size_t>(rows) * in;
        float* dropped = ws.slot(ctx, kDropped, n);
        dropoutApply(ctx, n, mask, x, dropped, false);
        loraInput = dropped;
    }
    gemm(ctx, false, true, rows, p.rank, in, 1.0f, loraInput, in, p.loraA, in, 0.0f, hidden, p.rank);
    gemm(ctx, false, true, rows, out, p.rank, p.loraScale, hidden, p.rank, p.loraB, p.rank, 1.0f, y, out);
}

void linearBackward(DeviceContext& ctx, Workspace& ws, int rows, int in, int out, const model::LinearParams<float>& p,
                    const float* x, const float* hidden, const float* dy, float gradScale, float* dx, bool accumulate,
                    const model::LinearGrads<float>& g, float* dHidden, const Dropout& mask) {
    if (g.weight != nullptr) gemm(ctx, true, false, out, in, rows, gradScale, dy, out, x, in, 0.0f, g.weight, in);
    if (dx != nullptr) {
        gemm(ctx, false, false, rows, in, out, gradScale, dy, out, p.weight, in, accumulate ? 1.0f : 0.0f, dx, in);
    }
    if (!hasLora(p)) return;
    const int rank = p.rank;
    const float branchScale = gradScale * p.loraScale;
    if (g.loraB != nullptr) gemm(ctx, true, false, out, rank, rows, branchScale, dy, out, hidden, rank, 0.0f, g.loraB, rank);
    if (g.loraA == nullptr && dx == nullptr) return;
    gemm(ctx, false, false, rows, rank, out, branchScale, dy, out, p.loraB, rank, 0.0f, dHidden, rank);
    const std::size_t n = static_cast<std::size_t>(rows) * in;
    if (g.loraA != nullptr) {
        const float* loraInput = x;
        if (mask.active) {
            float* dropped = ws.slot(ctx, kDropped, n);
            dropoutApply(ctx, n, mask, x, dropped, false);
            loraInput = dropped;
        }
        gemm(ctx, true, false, rank, in, rows, 1.0f, dHidden, rank, loraInput, in, 0.0f, g.loraA, in);
    }
    if (dx == nullptr) return;
    if (!mask.active) {
        gemm(ctx, false, false, rows, in, rank, 1.0f, dHidden, rank, p.loraA, in, 1.0f, dx, in);
        return;
    }
    // dx += mask ⊙ (dHidden·A) / (1 − p)
    float* dDropped = ws.slot(ctx, kDroppedGrad, n);
    gemm(ctx, false, false, rows, in, rank, 1.0f, dHidden, rank, p.loraA, in, 0.0f, dDropped, in);
    dropoutApply(ctx, n, mask, dDropped, dx, true);
}

} // namespace mixz::cuda::llamadev

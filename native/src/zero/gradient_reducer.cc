#include "mixz/zero/gradient_reducer.h"

#include <algorithm>
#include <cstring>
#include <exception>

#include "mixz/quant/block_quant.h"
#include "mixz/zero/collective_tags.h"
#include "mixz/zero/element_ops.h"

namespace mixz::zero {

using tensor::DType;

GradientReducer::GradientReducer(const EngineOptions& options, ParameterStore& store, backend::ComputeBackend& backend,
                                 CollectiveRunner& runner, MetricsRecorder& metrics, comm::Communicator& world,
                                 comm::Communicator* node, comm::Communicator* cross)
    : options_(options),
      store_(store),
      backend_(backend),
      runner_(runner),
      metrics_(metrics),
      world_(world),
      node_(node),
      cross_(cross),
      worldIntra_(sameHostFlags(world)),
      upload_(backend) {}

// Runs on the communication queue: reduce-scatters (mean) group g's full gradients and adds this
// rank's slice into its gradient partition, in chunks of at most reduce_bucket_size / N partition
// columns.
void GradientReducer::reduceInto(std::size_t u, std::size_t gi, const float* grads) {
    const auto start = Clock::now();
    Group& g = store_.units[u].groups[gi];
    if (!backend_.hostAddressable()) {
        if (store_.size() == 1) {
            // One rank: the mean is the gradient itself, accumulated where the state lives.
            for (std::size_t k = 0; k < g.params.size(); ++k) {
                const std::size_t numel = store_.params[g.params[k]].numel;
                backend_.accumulate(g.grad.data() + g.primary.off[k] * store_.eb(), options_.dtype, grads + g.foff[k], numel);
            }
            metrics_.add(&EngineMetrics::reduceSeconds, secondsSince(start));
            return;
        }
        // Device gradients: staged through host memory for the host transports.
        hostGrads_.resize(g.full);
        backend_.download(hostGrads_.data(), grads, g.full);
        grads = hostGrads_.data();
    }
    const Layout& layout = g.primary;
    const std::size_t S = layout.elements;
    const std::size_t N = static_cast<std::size_t>(store_.size());
    const std::size_t chunk = std::max<std::size_t>(1, std::min(S, std::max<std::size_t>(1, options_.zero.reduceBucketSize / N)));
    if (packed_.size() < N * chunk) packed_.assign(N * chunk, 0.0f);
    if (reduced_.size() < chunk) reduced_.assign(chunk, 0.0f);
    for (std::size_t a = 0; a < S; a += chunk) {
        const std::size_t b = std::min(S, a + chunk), width = b - a;
        // Member r's columns [a, b): param k's element r·part_k + (j − off_k), zero past its end.
        for (std::size_t k = 0; k < g.params.size(); ++k) {
            const ParamInfo& p = store_.params[g.params[k]];
            const std::size_t lo = std::max(a, layout.off[k]), hi = std::min(b, layout.off[k] + layout.part[k]);
            if (lo >= hi) continue;
            for (std::size_t r = 0; r < N; ++r) {
                float* dst = packed_.data() + r * width + (lo - a);
                const std::size_t first = r * layout.part[k] + (lo - layout.off[k]);
                const std::size_t count = hi - lo;
                const std::size_t valid = first >= p.numel ? 0 : std::min(count, p.numel - first);
                if (valid > 0) std::memcpy(dst, grads + g.foff[k] + first, valid * sizeof(float));
                if (valid < count) std::fill(dst + valid, dst + count, 0.0f);
            }
        }
        const float* mine = packed_.data();
        if (N > 1 && cross_ != nullptr) {
            quantizedReduce(width);
            mine = reduced_.data();
        } else if (N > 1) {
            const DType wireType = options_.gradientCommDType;
            const std::size_t wireBytes = elementBytes(wireType);
            const void* input = packed_.data();
            void* output = reduced_.data();
            if (wireType != DType::kFloat32) {
                // 16-bit on the wire: this rank's contributions rounded once, summed in fp32.
                gradWire_.resize(N * width * wireBytes);
                gradWireOut_.resize(width * wireBytes);
                convertInto(packed_.data(), DType::kFloat32, gradWire_.data(), wireType, N * width);
                input = gradWire_.data();
                output = gradWireOut_.data();
            }
            runner_.reduceScatter(world_, tags::kGradientReduceScatter, input, output, width, wireType, comm::ReduceOp::kMean);
            if (wireType != DType::kFloat32) convertInto(gradWireOut_.data(), wireType, reduced_.data(), DType::kFloat32, width);
            mine = reduced_.data();
            std::uint64_t in = 0, cross = 0;
            for (std::size_t m = 0; m < N; ++m) {
                if (static_cast<int>(m) == store_.rank()) continue;
                (worldIntra_[m] ? in : cross) += width * wireBytes;
            }
            metrics_.add(&EngineMetrics::reducedBytes, static_cast<std::uint64_t>(N) * width * wireBytes);
            metrics_.add(&EngineMetrics::reduceIntraBytes, in);
            metrics_.add(&EngineMetrics::reduceCrossBytes, cross);
        }
        accumulateGrad(g, a, mine, width);
    }
    metrics_.add(&EngineMetrics::reduceSeconds, secondsSince(start));
}

// qgZ: `packed` holds N chunks of `width` (chunk d for world rank d = k·L + l, node k, local rank
// l); `reduced` gets the mean over all ranks of this rank's chunk. Level 1: the node's ranks
// reduce-scatter in fp32 (chunks reordered so local rank l receives the node's sums of every
// chunk (k', l)). Level 2: those K sums are quantized to int4 blocks and gathered over the cross
// group (the ranks of local index l, one per node); each rank dequantizes chunk k (its own node's
// index) of every node's blob and sums. Then ÷ N: the true mean.
void GradientReducer::quantizedReduce(std::size_t width) {
    const std::size_t L = node_ != nullptr ? static_cast<std::size_t>(node_->size()) : 1;
    const std::size_t K = static_cast<std::size_t>(cross_->size());
    const std::size_t k = static_cast<std::size_t>(cross_->rank());
    // Reorder into local-rank-major order: part l' = chunks (0, l'), (1, l'), …, (K−1, l').
    reorder_.resize(L * K * width);
    for (std::size_t lp = 0; lp < L; ++lp) {
        for (std::size_t kp = 0; kp < K; ++kp) {
            std::memcpy(reorder_.data() + (lp * K + kp) * width, packed_.data() + (kp * L + lp) * width, width * sizeof(float));
        }
    }
    nodeReduced_.resize(K * width);
    if (L > 1) {
        runner_.reduceScatter(*node_, tags::kQgzNodeReduceScatter, reorder_.data(), nodeReduced_.data(), K * width, DType::kFloat32,
                              comm::ReduceOp::kSum);
        metrics_.add(&EngineMetrics::reduceIntraBytes, static_cast<std::uint64_t>(L - 1) * K * width * sizeof(float));
    } else {
        std::memcpy(nodeReduced_.data(), reorder_.data(), K * width * sizeof(float));
    }
    // Level 2: int4 blocks per chunk: codes then scales, per chunk, per member.
    const std::size_t block = options_.quantBlockSize;
    const std::size_t codes = quant::quantizedBytes(width, 4);
    const std::size_t scales = quant::blockCount(width, block);
    const std::size_t chunkBytes = alignUp(codes, 4) + scales * sizeof(float);
    const std::size_t blobBytes = K * chunkBytes;
    qgzGathered_.assign(K * blobBytes, 0);
    std::uint8_t* mineBlob = qgzGathered_.data() + k * blobBytes;
    for (std::size_t c = 0; c < K; ++c) {
        quant::QuantizeOptions q;
        q.input = nodeReduced_.data() + c * width;
        q.inputType = DType::kFloat32;
        q.elements = width;
        q.paddedElements = width;
        q.bits = 4;
        q.blockSize = block;
        q.output = mineBlob + c * chunkBytes;
        q.outputBytes = codes;
        q.scales = reinterpret_cast<float*>(mineBlob + c * chunkBytes + alignUp(codes, 4));
        q.scaleCount = scales;
        q.threads = 1;
        if (!allFinite(q.input, DType::kFloat32, width)) {
            poisonBlocks(q.output, q.outputBytes, q.scales, q.scaleCount);
            continue;
        }
        quant::quantize(q);
    }
    runner_.allgatherInPlace(*cross_, tags::kQgzCrossGather, qgzGathered_.data(), blobBytes);
    metrics_.add(&EngineMetrics::reduceCrossBytes, static_cast<std::uint64_t>(K - 1) * blobBytes);
    metrics_.add(&EngineMetrics::reducedBytes,
                 static_cast<std::uint64_t>(K - 1) * blobBytes + static_cast<std::uint64_t>(L - 1) * K * width * sizeof(float));
    // Sum chunk k of every node: our own node's exact fp32 sum, the others dequantized.
    reduced_.assign(width, 0.0f);
    std::vector<float>& part = dequantized_;
    part.resize(width);
    for (std::size_t kp = 0; kp < K; ++kp) {
        const float* source = nodeReduced_.data() + k * width;
        if (kp != k) {
            const std::uint8_t* chunk = qgzGathered_.data() + kp * blobBytes + k * chunkBytes;
            quant::DequantizeOptions q;
            q.input = chunk;
            q.inputBytes = codes;
            q.bits = 4;
            q.scales = reinterpret_cast<const float*>(chunk + alignUp(codes, 4));
            q.scaleCount = scales;
            q.elements = width;
            q.blockSize = block;
            q.output = part.data();
            q.outputType = DType::kFloat32;
            q.outputElements = width;
            q.threads = 1;
            quant::dequantize(q);
            source = part.data();
        }
        for (std::size_t j = 0; j < width; ++j) reduced_[j] += source[j];
    }
    const float inverse = 1.0f / static_cast<float>(store_.size());
    for (std::size_t j = 0; j < width; ++j) reduced_[j] *= inverse;
}

void GradientReducer::accumulateGrad(Group& g, std::size_t offset, const float* values, std::size_t count) {
    // The backend adds in fp32 and rounds once to the model dtype (DeepSpeed's default gradient
    // accumulation dtype), where the gradient partition lives; host sums go up to it first.
    if (!backend_.hostAddressable()) {
        upload_.reserve(count);
        backend_.upload(upload_.data(), values, count);
        values = upload_.data();
    }
    backend_.accumulate(g.grad.data() + offset * store_.eb(), options_.dtype, values, count);
}

void GradientReducer::submitReduce(std::size_t u, std::size_t gi, float* grads, bool pooled) {
    pending_.push_back(runner_.submit([this, u, gi, grads, pooled] {
        struct GiveBack {
            backend::ComputeBackend* backend;
            float* grads;
            bool pooled;
            ~GiveBack() {
                if (pooled) backend->giveBuffer(grads);
            }
        } giveBack{&backend_, grads, pooled};
        reduceInto(u, gi, grads);
    }));
}

void GradientReducer::takeGrads(std::size_t u, GradBuffers& grads) {
    grads[u].assign(store_.units[u].groups.size(), nullptr);
    for (std::size_t gi = 0; gi < store_.units[u].groups.size(); ++gi) {
        const Group& g = store_.units[u].groups[gi];
        if (!g.frozen && g.full > 0) grads[u][gi] = backend_.takeBuffer(g.full);
    }
}

void GradientReducer::submitReduces(std::size_t u, GradBuffers& grads) {
    for (std::size_t gi = 0; gi < store_.units[u].groups.size(); ++gi) {
        if (grads[u][gi] != nullptr) submitReduce(u, gi, grads[u][gi], true);
        grads[u][gi] = nullptr;
    }
}

void GradientReducer::waitReduces() {
    const auto start = Clock::now();
    std::exception_ptr first;
    for (auto& future : pending_) {
        try {
            future.get();
        } catch (...) {
            if (!first) first = std::current_exception();
        }
    }
    pending_.clear();
    metrics_.add(&EngineMetrics::reduceWaitSeconds, secondsSince(start));
    if (first) std::rethrow_exception(first);
}

void GradientReducer::settle() {
    for (auto& future : pending_) {
        try {
            future.wait();
        } catch (...) {
        }
    }
    pending_.clear();
}

std::size_t GradientReducer::bufferBytes() const {
    return qgzGathered_.size() + gradWire_.size() + gradWireOut_.size() +
           (packed_.size() + reduced_.size() + reorder_.size() + nodeReduced_.size() + dequantized_.size() + hostGrads_.size()) *
               sizeof(float) +
           upload_.bytes();
}

} // namespace mixz::zero

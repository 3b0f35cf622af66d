#include "mixz/zero/fetcher.h"

#include <algorithm>
#include <cstring>

#include "mixz/common/error.h"
#include "mixz/zero/collective_tags.h"
#include "mixz/zero/element_ops.h"

namespace mixz::zero {

using tensor::DType;

Fetcher::Fetcher(const EngineOptions& options, ParameterStore& store, Secondaries& secondaries, backend::ComputeBackend& backend,
                 CollectiveRunner& runner, MetricsRecorder& metrics, comm::Communicator& world)
    : options_(options),
      store_(store),
      secondaries_(secondaries),
      backend_(backend),
      runner_(runner),
      metrics_(metrics),
      world_(world),
      worldIntra_(sameHostFlags(world)) {}

void Fetcher::gatherInto(std::size_t u, std::size_t gi, float* buffer) {
    if (backend_.hostAddressable()) {
        gatherToHost(u, gi, buffer);
        return;
    }
    Group& g = store_.units[u].groups[gi];
    const bool useSecondary = secondaries_.usable(g);
    const int members = useSecondary ? secondaries_.group().size() : world_.size();
    if (members == 1) {
        // Nothing to gather: the partition is the parameter, unpacked where it lives.
        gatherLocal(g, buffer);
        return;
    }
    hostValues_.resize(g.full);
    gatherToHost(u, gi, hostValues_.data());
    backend_.upload(buffer, hostValues_.data(), g.full);
}

void Fetcher::gatherLocal(Group& g, float* buffer) {
    const auto start = Clock::now();
    const std::size_t eb = store_.eb();
    const Layout& layout = g.primary;
    for (std::size_t k = 0; k < g.params.size(); ++k) {
        const std::size_t numel = store_.params[g.params[k]].numel;
        float* out = buffer + g.foff[k];
        if (g.quantized) {
            const float* scales = reinterpret_cast<const float*>(g.data.data() + layout.scaleBase) + layout.soff[k];
            backend_.dequantize8(g.data.data() + layout.qoff[k], scales, numel, options_.quantBlockSize, out);
        } else {
            backend_.convert(g.data.data() + layout.off[k] * eb, options_.dtype, out, DType::kFloat32, numel);
        }
    }
    metrics_.add(&EngineMetrics::gatherSeconds, secondsSince(start));
}

void Fetcher::gatherToHost(std::size_t u, std::size_t gi, float* values, bool exact) {
    const auto start = Clock::now();
    Group& g = store_.units[u].groups[gi];
    const std::size_t eb = store_.eb();
    const bool useSecondary = secondaries_.usable(g);
    comm::Communicator& c = useSecondary ? secondaries_.group() : world_;
    const Layout& layout = useSecondary ? g.secondary : g.primary;
    const std::size_t members = static_cast<std::size_t>(c.size());
    // qwZ on the fly: int8 on the wire for a world gather of 16-bit/fp32 partitions.
    const bool onTheFly = options_.quantizeWeights && !exact && !g.quantized && !useSecondary && members > 1;
    const bool quantized = g.quantized || onTheFly;
    // This rank's partitions on the host (a copy from a device backend's state memory).
    const backend::Block& source = useSecondary ? g.secondaryData : g.data;
    const std::uint8_t* sourceHost = store_.hostRead(source.data(), source.size(), localHost_);
    if (onTheFly) {
        wire_.assign(layout.bytes(true, eb), 0);
        for (std::size_t k = 0; k < g.params.size(); ++k) {
            const std::size_t i = g.params[k];
            store_.quantizeInto(sourceHost + layout.off[k] * eb, options_.dtype, store_.sliceLength(i), layout.part[k], wire_.data(),
                                layout, k);
        }
    }
    const std::uint8_t* local = onTheFly ? wire_.data() : sourceHost;
    const std::size_t bytes = layout.bytes(quantized, eb);
    const std::uint8_t* gathered = local;
    std::size_t stride = 0;
    if (members > 1 && bytes > 0) {
        if (staging_.size() < members * bytes) staging_.resize(members * bytes);
        std::uint8_t* mine = staging_.data() + static_cast<std::size_t>(c.rank()) * bytes;
        std::memcpy(mine, local, bytes);
        runner_.allgatherInPlace(c, useSecondary ? tags::kHpzGather : tags::kWorldGather, staging_.data(), bytes);
        gathered = staging_.data();
        stride = bytes;
        const std::vector<bool>& intra = useSecondary ? secondaries_.intra() : worldIntra_;
        std::uint64_t in = 0, cross = 0;
        for (std::size_t m = 0; m < members; ++m) {
            if (static_cast<int>(m) == c.rank()) continue;
            (intra[m] ? in : cross) += bytes;
        }
        metrics_.add(&EngineMetrics::gatheredBytes, in + cross);
        if (g.frozen) {
            metrics_.add(&EngineMetrics::frozenGatherIntraBytes, in);
            metrics_.add(&EngineMetrics::frozenGatherCrossBytes, cross);
        } else {
            metrics_.add(&EngineMetrics::trainableGatherIntraBytes, in);
            metrics_.add(&EngineMetrics::trainableGatherCrossBytes, cross);
        }
    }
    for (std::size_t k = 0; k < g.params.size(); ++k) {
        const ParamInfo& p = store_.params[g.params[k]];
        for (std::size_t m = 0; m < members; ++m) {
            const std::size_t begin = m * layout.part[k];
            if (begin >= p.numel) break;
            const std::size_t valid = std::min(layout.part[k], p.numel - begin);
            const std::uint8_t* member = gathered + m * stride;
            float* out = values + g.foff[k] + begin;
            if (quantized) {
                store_.dequantizeFrom(member, layout, k, valid, out);
            } else {
                convertInto(member + layout.off[k] * eb, options_.dtype, out, DType::kFloat32, valid);
            }
        }
    }
    // Persistent parameters (unit 0) are always gathered: a secondary would only cost memory.
    if (!useSecondary && secondaries_.on() && u != 0) secondaries_.build(g, values);
    metrics_.add(&EngineMetrics::gatherSeconds, secondsSince(start));
}

std::shared_future<void> Fetcher::submitGather(std::size_t u, std::size_t gi, float* values) {
    auto future = runner_.submit([this, u, gi, values] { gatherInto(u, gi, values); });
    if (!options_.zero.overlapComm) future.wait();
    return future;
}

void Fetcher::fetch(std::size_t u) {
    for (std::size_t gi = 0; gi < store_.units[u].groups.size(); ++gi) {
        Group& g = store_.units[u].groups[gi];
        if (g.status != Availability::kNotAvailable) continue;
        g.values = backend_.takeBuffer(g.full);
        g.status = Availability::kInflight;
        g.fetched = submitGather(u, gi, g.values);
    }
}

std::size_t Fetcher::fullOf(std::size_t u) const {
    std::size_t full = 0;
    for (const Group& g : store_.units[u].groups) full += g.full;
    return full;
}

bool Fetcher::anyFetched(std::size_t u) const {
    for (const Group& g : store_.units[u].groups) {
        if (g.status != Availability::kNotAvailable) return true;
    }
    return false;
}

std::size_t Fetcher::liveElements() const {
    std::size_t live = 0;
    for (std::size_t u = 1; u < store_.units.size(); ++u) {
        for (const Group& g : store_.units[u].groups) {
            if (g.status != Availability::kNotAvailable) live += g.full;
        }
    }
    return live;
}

void Fetcher::ensure(std::size_t u, const std::vector<std::size_t>& order, std::size_t position) {
    fetch(u);
    prefetchAfter(order, position);
    for (Group& g : store_.units[u].groups) {
        if (g.status == Availability::kInflight) {
            const auto start = Clock::now();
            g.fetched.get(); // rethrows the gather's failure
            metrics_.add(&EngineMetrics::gatherWaitSeconds, secondsSince(start));
            g.status = Availability::kAvailable;
        }
    }
}

void Fetcher::prefetchAfter(const std::vector<std::size_t>& order, std::size_t position) {
    if (!options_.zero.overlapComm || options_.zero.prefetchBucketSize == 0) return;
    std::size_t prefetched = 0;
    for (std::size_t k = position + 1; k < order.size(); ++k) {
        const std::size_t next = order[k];
        const std::size_t full = fullOf(next);
        if (anyFetched(next)) {
            prefetched += full;
            continue;
        }
        if (prefetched + full > options_.zero.prefetchBucketSize) break;
        if (liveElements() + full > options_.zero.maxLiveParameters) break;
        fetch(next);
        prefetched += full;
    }
}

void Fetcher::release(std::size_t u) {
    if (u == 0) return;
    for (Group& g : store_.units[u].groups) {
        if (g.status == Availability::kNotAvailable) continue;
        if (g.status == Availability::kInflight) {
            // Its gather still writes into the buffer; never hand it back before that ends.
            try {
                g.fetched.wait();
            } catch (...) {
            }
        }
        backend_.giveBuffer(g.values);
        g.values = nullptr;
        g.status = Availability::kNotAvailable;
    }
}

void Fetcher::releaseAll() {
    for (std::size_t u = 1; u < store_.units.size(); ++u) release(u);
}

void Fetcher::gatherPersistent() {
    for (std::size_t gi = 0; gi < store_.units[0].groups.size(); ++gi) {
        Group& g = store_.units[0].groups[gi];
        if (!g.stale && g.status == Availability::kAvailable) continue;
        while (persistent_.size() <= gi) persistent_.emplace_back(backend_);
        // reserve() may replace the buffer: nothing else holds its pointer while stale.
        float* values = persistent_[gi].reserve(g.full);
        runner_.submit([this, gi, values] { gatherInto(0, gi, values); }).get();
        g.values = values;
        g.status = Availability::kAvailable;
        g.stale = false;
    }
    store_.persistentDirty = false;
}

std::size_t Fetcher::persistentBytes() const {
    std::size_t bytes = 0;
    for (const backend::Buffer& b : persistent_) bytes += b.bytes();
    return bytes;
}

void Fetcher::releasePersistent() {
    for (Group& g : store_.units[0].groups) {
        g.values = nullptr;
        g.status = Availability::kNotAvailable;
        g.stale = true;
    }
    persistent_.clear();
}

const float* Fetcher::valueOf(std::size_t i) const {
    const Group& g = store_.groupOf(i);
    MIXZ_ENFORCE(g.status == Availability::kAvailable, store_.params[i].name, " is not gathered");
    return g.values + g.foff[store_.where[i].index];
}

} // namespace mixz::zero

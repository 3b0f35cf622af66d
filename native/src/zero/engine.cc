#include "mixz/zero/engine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <unordered_map>
#include <mutex>
#include <thread>
#include <utility>

#include "mixz/comm/collectives.h"
#include "mixz/common/error.h"
#include "mixz/common/thread_pool.h"
#include "mixz/quant/block_quant.h"

namespace mixz::zero {
namespace {

using Clock = std::chrono::steady_clock;
using tensor::DType;

double secondsSince(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

std::size_t elementBytes(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

void convertInto(const void* input, DType inputType, void* output, DType outputType, std::size_t elements) {
    if (elements == 0) return;
    if (inputType == outputType) {
        std::memcpy(output, input, elements * elementBytes(inputType));
        return;
    }
    tensor::ConvertOptions options;
    options.input = input;
    options.inputType = inputType;
    options.output = output;
    options.outputType = outputType;
    options.elements = elements;
    tensor::convert(options);
}

// splitmix64: a counter-based generator, so element j of parameter i gets the same value whatever
// the world size and whichever rank draws it.
std::uint64_t mix(std::uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

float normalAt(std::uint64_t seed, std::uint64_t param, std::uint64_t index, double std) {
    const std::uint64_t a = mix(seed ^ mix(param * 0x100000001B3ull + 1) ^ mix(index * 2 + 0));
    const std::uint64_t b = mix(a ^ mix(index * 2 + 1));
    // Box–Muller on two uniforms in (0, 1].
    const double u1 = (static_cast<double>(a >> 11) + 1.0) / 9007199254740992.0;
    const double u2 = static_cast<double>(b >> 11) / 9007199254740992.0;
    return static_cast<float>(std * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

// One thread that runs the engine's collectives in submission order (DeepSpeed's all-gather and
// reduce streams collapsed into one ordered queue: every rank must issue collectives in the same
// order, and one queue makes that order the program order).
class CommThread {
public:
    CommThread() : thread_([this] { loop(); }) {}
    ~CommThread() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        thread_.join();
    }

    std::shared_future<void> submit(std::function<void()> work) {
        auto task = std::make_shared<std::packaged_task<void()>>(std::move(work));
        std::shared_future<void> future = task->get_future().share();
        {
            std::lock_guard<std::mutex> lock(mutex_);
            queue_.push_back([task] { (*task)(); });
        }
        wake_.notify_one();
        return future;
    }

private:
    void loop() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
                if (queue_.empty()) return; // stopping and drained
                job = std::move(queue_.front());
                queue_.pop_front();
            }
            job();
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::function<void()>> queue_;
    bool stopping_ = false;
    std::thread thread_;
};

// Full fp32 buffers for gathered parameters and their gradients, kept for reuse by size: freeing
// and re-faulting tens of megabytes per layer per step costs more than the copies (measured in
// issue 4's all-gather). Bounded in practice by the prefetch depth.
class BufferPool {
public:
    float* take(std::size_t elements) {
        elements = std::max<std::size_t>(elements, 1);
        std::lock_guard<std::mutex> lock(mutex_);
        inUse_ += elements;
        peakInUse_ = std::max(peakInUse_, inUse_);
        auto& free = free_[elements];
        if (!free.empty()) {
            float* buffer = free.back();
            free.pop_back();
            return buffer;
        }
        owned_.push_back(std::make_unique<float[]>(elements));
        held_ += elements;
        sizes_[owned_.back().get()] = elements;
        return owned_.back().get();
    }

    void give(float* buffer) {
        if (buffer == nullptr) return;
        std::lock_guard<std::mutex> lock(mutex_);
        const std::size_t elements = sizes_.at(buffer);
        inUse_ -= elements;
        free_[elements].push_back(buffer);
    }

    std::size_t bytesHeld() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return held_ * sizeof(float);
    }
    std::size_t peakBytes() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return peakInUse_ * sizeof(float);
    }

private:
    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<float[]>> owned_;
    std::map<float*, std::size_t> sizes_;
    std::map<std::size_t, std::vector<float*>> free_;
    std::size_t held_ = 0;
    std::size_t inUse_ = 0;
    std::size_t peakInUse_ = 0;
};

enum class Availability { kNotAvailable, kInflight, kAvailable };

// Whether n values of a float type are all finite (16-bit types: the exponent is not all ones).
bool allFinite(const void* data, DType type, std::size_t n) {
    if (type == DType::kFloat32) {
        const float* values = static_cast<const float*>(data);
        bool finite = true;
        for (std::size_t i = 0; i < n; ++i) finite &= std::isfinite(values[i]);
        return finite;
    }
    const std::uint16_t mask = type == DType::kFloat16 ? 0x7C00 : 0x7F80;
    const std::uint16_t* bits = static_cast<const std::uint16_t*>(data);
    bool finite = true;
    for (std::size_t i = 0; i < n; ++i) finite &= (bits[i] & mask) != mask;
    return finite;
}

// Quantized blocks that stand for non-finite input: codes 0, scales NaN, so dequantizing gives NaN
// and the overflow check downstream sees it. The quantizer itself refuses non-finite input, and a
// refusal on one rank only would leave the ranks' collectives out of step.
void poisonBlocks(void* codes, std::size_t codeBytes, float* scales, std::size_t scaleCount) {
    std::memset(codes, 0, codeBytes);
    std::fill(scales, scales + scaleCount, std::numeric_limits<float>::quiet_NaN());
}

std::size_t alignUp(std::size_t value, std::size_t to) { return (value + to - 1) / to * to; }

// How a group's parameters are cut into partitions over M members: param k's member m holds
// elements [m·part[k], (m+1)·part[k]) of the flattened tensor (zero past its end). Unquantized, a
// member's partitions lie back to back (off[k], in elements); quantized (int8), partition k's
// `part` codes lie at qoff[k] bytes and its blockCount(part) scales at soff[k] floats in the scale
// region that follows all codes (at scaleBase bytes, 4-aligned).
struct Layout {
    int members = 1;
    std::vector<std::size_t> part;
    std::vector<std::size_t> off;
    std::size_t elements = 0;
    std::vector<std::size_t> qoff;
    std::vector<std::size_t> soff;
    std::size_t scaleBase = 0;
    std::size_t scaleCount = 0;

    std::size_t bytes(bool quantized, std::size_t eb) const {
        return quantized ? scaleBase + scaleCount * sizeof(float) : elements * eb;
    }
};

Layout makeLayout(const std::vector<std::size_t>& numels, int members, std::size_t blockSize) {
    Layout layout;
    layout.members = members;
    std::size_t codes = 0;
    for (std::size_t numel : numels) {
        const std::size_t part = (numel + static_cast<std::size_t>(members) - 1) / static_cast<std::size_t>(members);
        layout.part.push_back(part);
        layout.off.push_back(layout.elements);
        layout.elements += part;
        // The partition is quantized as zero-padded to whole blocks (zeropp.md P4/P5), but the
        // padding's codes are zeros by construction and never enter a block's absmax, so they are
        // neither stored nor sent: `part` codes and blockCount(part) scales per parameter. (With a
        // 4096-element block and small partitions, sending the padding cost more than 16-bit.)
        layout.qoff.push_back(codes);
        codes += quant::quantizedBytes(part, 8);
        layout.soff.push_back(layout.scaleCount);
        layout.scaleCount += quant::blockCount(part, blockSize);
    }
    layout.scaleBase = alignUp(codes, 4);
    return layout;
}

// Parameters gathered together: one unit's base parameters, or its LoRA adapters.
struct Group {
    std::vector<std::size_t> params;
    std::vector<std::size_t> foff; // each param's offset in the full buffer
    std::size_t full = 0;          // F: elements of the full (unpadded) parameters
    bool frozen = false;           // no gradient, no optimizer state
    bool quantized = false;        // partitions are int8 blocks (frozen only)
    Layout primary;                // over the world
    std::vector<std::uint8_t> data;
    std::vector<std::uint8_t> grad; // primary.elements, model dtype (trainable)
    std::vector<float> master;      // primary.elements, when the model dtype is not fp32 (trainable)
    std::vector<float> expAvg;
    std::vector<float> expAvgSq;
    Layout secondary;               // over the hpZ group
    std::vector<std::uint8_t> secondaryData;
    bool secondaryValid = false;
    Availability status = Availability::kNotAvailable;
    std::shared_future<void> fetched;
    float* values = nullptr;
    std::vector<float> persistentValues; // unit 0: kept gathered, never pooled
    bool stale = true;                   // unit 0: persistentValues must be gathered again
};

struct Unit {
    std::vector<Group> groups;
};

struct ParamLocation {
    std::size_t unit = 0;
    std::size_t group = 0;
    std::size_t index = 0; // within the group
};

const char* const kLinears[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

std::string linearPath(int layer, const std::string& linear) {
    const bool mlp = linear == "gate_proj" || linear == "up_proj" || linear == "down_proj";
    return "model.layers." + std::to_string(layer) + (mlp ? ".mlp." : ".self_attn.") + linear;
}

} // namespace

struct Engine::State {
    EngineOptions options;
    std::shared_ptr<comm::Communicator> world;
    std::shared_ptr<comm::Communicator> hpz; // null without hpZ
    std::shared_ptr<comm::Communicator> node;  // qgZ: this node's ranks (null: one rank per node)
    std::shared_ptr<comm::Communicator> cross; // qgZ: this local rank of every node (null: no qgZ)
    std::vector<float> nodeReduced;            // qgZ: the node's partial sums for this local rank
    std::vector<std::uint8_t> qgzGathered;
    std::vector<float> reorder, dequantized;
    std::vector<float> gradSum; // accumulateGrad's fp32 sums (16-bit models)
    std::vector<std::uint8_t> gradWire, gradWireOut; // 16-bit gradient reduce-scatter
    int rank = 0;
    int size = 1;
    std::vector<ParamInfo> params;
    std::vector<ParamLocation> where;
    std::unordered_map<std::string, std::size_t> byName;
    std::vector<Unit> units;
    BufferPool pool;
    std::vector<std::uint8_t> staging; // gathers, grown to the largest
    std::vector<std::uint8_t> wire;    // zero_quantized_weights: this rank's int8 partitions
    std::vector<float> packed;         // reduce-scatter input
    std::vector<float> reduced;
    std::unique_ptr<CommThread> comm;
    std::vector<std::shared_future<void>> pendingReduces;
    std::vector<bool> worldIntra; // per world member: on this rank's host
    std::vector<bool> hpzIntra;

    // LoRA.
    bool lora = false;
    LoraOptions loraOptions;
    // Training forwards begun so far: part of each LoRA dropout mask's seed, so every micro-step
    // draws new masks.
    std::uint64_t trainForwards = 0;

    // Activations.
    std::vector<std::vector<float>> hidden;
    std::vector<model::DecoderLayerCache<float>> caches;
    model::HeadCache<float> headCache;
    std::vector<float> gradA, gradB;
    std::vector<std::vector<float>> persistentGrads; // per group of unit 0, during backward
    std::vector<std::int32_t> ids;
    int micro = 0;
    int seq = 0;
    bool haveTrainForward = false;
    bool persistentDirty = false;
    std::size_t activationsPeak = 0;

    std::uint64_t steps = 0;
    std::string broken;
    std::string commFailure; // the first failure of a communication-thread task (under metricsMutex)
    std::size_t heldUnit = 0; // gatherParameter keeps its unit gathered for the next index (0: none)
    std::vector<std::vector<float*>> backwardGrads; // pooled gradient buffers not yet handed to a reduction

    std::mutex metricsMutex;
    EngineMetrics metrics;

    std::size_t layerUnit(int layer) const { return 2 + static_cast<std::size_t>(layer); }
    std::size_t headUnit() const { return 2 + static_cast<std::size_t>(options.dims.layers); }
    std::size_t eb() const { return elementBytes(options.dtype); }
    bool hpzOn() const { return hpz != nullptr; }

    template <typename Field>
    void add(Field EngineMetrics::*field, Field amount) {
        std::lock_guard<std::mutex> lock(metricsMutex);
        metrics.*field += amount;
    }

    void requireUsable() const {
        if (!broken.empty()) MIXZ_THROW(IoError, "the engine stopped after an earlier failure: ", broken);
    }

    Group& groupOf(std::size_t i) { return units[where[i].unit].groups[where[i].group]; }
    const Group& groupOf(std::size_t i) const { return units[where[i].unit].groups[where[i].group]; }

    // --- building ---------------------------------------------------------------------------

    // Adds a parameter to group `group` of unit `unit` (or of the persistent unit 0 when small).
    void addParam(const std::string& name, std::vector<std::int64_t> shape, std::size_t unit, std::size_t group, bool trainable) {
        ParamInfo info;
        info.name = name;
        info.numel = 1;
        for (std::int64_t d : shape) info.numel *= static_cast<std::size_t>(d);
        info.shape = std::move(shape);
        info.partition = (info.numel + static_cast<std::size_t>(size) - 1) / static_cast<std::size_t>(size);
        info.persistent = info.numel <= options.zero.persistenceThreshold;
        info.trainable = trainable;
        const std::size_t u = info.persistent ? 0 : unit;
        info.unit = static_cast<int>(u);
        Unit& target = units[u];
        if (target.groups.size() <= group) target.groups.resize(group + 1);
        Group& g = target.groups[group];
        where.push_back({u, group, g.params.size()});
        byName[name] = params.size();
        g.params.push_back(params.size());
        g.foff.push_back(g.full);
        g.full += info.numel;
        params.push_back(std::move(info));
    }

    std::vector<std::size_t> numelsOf(const Group& g) const {
        std::vector<std::size_t> numels;
        for (std::size_t i : g.params) numels.push_back(params[i].numel);
        return numels;
    }

    // Allocates a new group's partitions (zeros) and, for trainable groups, its gradient and
    // optimizer state.
    void allocate(Group& g) {
        g.primary = makeLayout(numelsOf(g), size, options.quantBlockSize);
        g.data.assign(g.primary.elements * eb(), 0);
        if (hpzOn()) g.secondary = makeLayout(numelsOf(g), hpz->size(), options.quantBlockSize);
        if (!g.frozen) {
            g.grad.assign(g.primary.elements * eb(), 0);
            if (options.dtype != DType::kFloat32) g.master.assign(g.primary.elements, 0.0f);
            g.expAvg.assign(g.primary.elements, 0.0f);
            g.expAvgSq.assign(g.primary.elements, 0.0f);
        }
    }

    void build() {
        const model::LlamaDims& d = options.dims;
        const std::int64_t h = d.hidden, kv = d.kvDim(), inter = d.intermediate, vocab = d.vocab;
        units.resize(headUnit() + 1);
        for (Unit& unit : units) unit.groups.resize(1);
        addParam("model.embed_tokens.weight", {vocab, h}, 1, 0, true);
        for (int i = 0; i < d.layers; ++i) {
            const std::string p = "model.layers." + std::to_string(i) + ".";
            const std::size_t u = layerUnit(i);
            addParam(p + "self_attn.q_proj.weight", {h, h}, u, 0, true);
            addParam(p + "self_attn.k_proj.weight", {kv, h}, u, 0, true);
            addParam(p + "self_attn.v_proj.weight", {kv, h}, u, 0, true);
            addParam(p + "self_attn.o_proj.weight", {h, h}, u, 0, true);
            addParam(p + "mlp.gate_proj.weight", {inter, h}, u, 0, true);
            addParam(p + "mlp.up_proj.weight", {inter, h}, u, 0, true);
            addParam(p + "mlp.down_proj.weight", {h, inter}, u, 0, true);
            addParam(p + "input_layernorm.weight", {h}, u, 0, true);
            addParam(p + "post_attention_layernorm.weight", {h}, u, 0, true);
        }
        addParam("model.norm.weight", {h}, headUnit(), 0, true);
        addParam("lm_head.weight", {vocab, h}, headUnit(), 0, true);
        for (Unit& unit : units) {
            for (Group& g : unit.groups) allocate(g);
        }
        units[0].groups[0].persistentValues.assign(units[0].groups[0].full, 0.0f);
        std::vector<float> values;
        for (std::size_t i = 0; i < params.size(); ++i) {
            const bool isNorm = params[i].shape.size() == 1;
            values.assign(params[i].partition, 0.0f);
            const std::size_t begin = sliceBegin(i), length = sliceLength(i);
            for (std::size_t j = 0; j < length; ++j) values[j] = isNorm ? 1.0f : normalAt(options.seed, i, begin + j, options.initStd);
            writePartition(i, values.data(), true);
        }
        worldIntra = intraFlags(*world);
        if (hpzOn()) hpzIntra = intraFlags(*hpz);
    }

    std::vector<bool> intraFlags(const comm::Communicator& c) const {
        const std::string& me = c.members()[static_cast<std::size_t>(c.rank())].host;
        std::vector<bool> flags;
        for (const comm::Peer& peer : c.members()) flags.push_back(peer.host == me);
        return flags;
    }

    std::size_t sliceBegin(std::size_t i) const {
        return std::min(params[i].numel, static_cast<std::size_t>(rank) * params[i].partition);
    }
    std::size_t sliceLength(std::size_t i) const {
        const std::size_t begin = sliceBegin(i);
        return std::min(params[i].partition, params[i].numel - begin);
    }

    // Stores param i's whole partition (padding included) from fp32 values; the master copy is the
    // rounded value, as DeepSpeed builds its fp32 master from the 16-bit parameters.
    void writePartition(std::size_t i, const float* values, bool setMaster) {
        Group& g = groupOf(i);
        const std::size_t k = where[i].index;
        const std::size_t n = params[i].partition;
        if (g.quantized) {
            quantizeInto(values, DType::kFloat32, sliceLength(i), n, g.data.data(), g.primary, k);
        } else {
            const std::size_t off = g.primary.off[k];
            convertInto(values, DType::kFloat32, g.data.data() + off * eb(), options.dtype, n);
            if (setMaster && !g.master.empty()) {
                convertInto(g.data.data() + off * eb(), options.dtype, g.master.data() + off, DType::kFloat32, n);
            }
        }
        // The secondary was cut from the old values (zeropp.md §8: a write into a primary drops it).
        g.secondaryValid = false;
        if (where[i].unit == 0) {
            g.stale = true;
            persistentDirty = true;
        }
    }

    // Quantizes `valid` values (then zeros up to the partition's blocks) into slot k of a
    // quantized blob laid out by `layout`.
    void quantizeInto(const void* input, DType inputType, std::size_t valid, std::size_t part, std::uint8_t* blob,
                      const Layout& layout, std::size_t k) {
        quant::QuantizeOptions q;
        q.input = input;
        q.inputType = inputType;
        q.elements = valid;
        q.paddedElements = part; // see makeLayout: the block padding past `part` is implicit
        q.bits = 8;
        q.blockSize = options.quantBlockSize;
        q.output = blob + layout.qoff[k];
        q.outputBytes = quant::quantizedBytes(q.paddedElements, 8);
        q.scales = reinterpret_cast<float*>(blob + layout.scaleBase) + layout.soff[k];
        q.scaleCount = quant::blockCount(q.paddedElements, options.quantBlockSize);
        q.threads = 1;
        if (q.paddedElements == 0) return;
        if (!allFinite(input, inputType, valid)) return poisonBlocks(q.output, q.outputBytes, q.scales, q.scaleCount);
        quant::quantize(q);
    }

    void dequantizeFrom(const std::uint8_t* blob, const Layout& layout, std::size_t k, std::size_t valid, float* out) const {
        if (valid == 0) return;
        quant::DequantizeOptions q;
        q.input = blob + layout.qoff[k];
        q.inputBytes = quant::quantizedBytes(valid, 8);
        q.bits = 8;
        q.scales = reinterpret_cast<const float*>(blob + layout.scaleBase) + layout.soff[k];
        q.scaleCount = quant::blockCount(valid, options.quantBlockSize);
        q.elements = valid;
        q.blockSize = options.quantBlockSize;
        q.output = out;
        q.outputType = DType::kFloat32;
        q.outputElements = valid;
        q.threads = 1;
        quant::dequantize(q);
    }

    // --- collectives ------------------------------------------------------------------------
    // The engine's tags are tagBase + 1 … 6 (world gather, reduce-scatter, all-reduce, hpZ
    // gather, qgZ node reduce-scatter, qgZ cross gather); every call uses the engine's timeout.

    // In place: this member's bytesPerMember already sit at output + rank · bytesPerMember.
    void allgatherInPlace(comm::Communicator& c, std::uint32_t tag, std::uint8_t* output, std::size_t bytesPerMember) {
        comm::AllgatherOptions op(c);
        op.tag = options.tagBase + tag;
        op.timeout = options.timeout;
        op.input = output + static_cast<std::size_t>(c.rank()) * bytesPerMember;
        op.inputBytes = bytesPerMember;
        op.output = output;
        op.outputBytes = static_cast<std::size_t>(c.size()) * bytesPerMember;
        comm::allgather(op);
    }

    void reduceScatter(comm::Communicator& c, std::uint32_t tag, const void* input, void* output, std::size_t count,
                       DType dtype, comm::ReduceOp reduceOp) {
        comm::ReduceScatterOptions op(c);
        op.tag = options.tagBase + tag;
        op.timeout = options.timeout;
        op.input = input;
        op.output = output;
        op.count = count;
        op.dtype = dtype;
        op.op = reduceOp;
        comm::reduceScatter(op);
    }

    // --- gathering -------------------------------------------------------------------------

    // Runs on the communication thread: fills `values` (F elements) with group g's parameters, from
    // the hpZ secondaries when they are valid, else from the primaries over the world (building
    // the secondaries from the result when hpZ is on).
    // `exact`: never quantize on the fly (quantizeNontrainable needs the real values).
    void gatherInto(std::size_t u, std::size_t gi, float* values, bool exact = false) {
        const auto start = Clock::now();
        Group& g = units[u].groups[gi];
        const bool useSecondary = hpzOn() && g.secondaryValid;
        comm::Communicator& c = useSecondary ? *hpz : *world;
        const Layout& layout = useSecondary ? g.secondary : g.primary;
        const std::size_t members = static_cast<std::size_t>(c.size());
        // qwZ on the fly: int8 on the wire for a world gather of 16-bit/fp32 partitions.
        const bool onTheFly = options.quantizeWeights && !exact && !g.quantized && !useSecondary && members > 1;
        const bool quantized = g.quantized || onTheFly;
        if (onTheFly) {
            wire.assign(layout.bytes(true, eb()), 0);
            for (std::size_t k = 0; k < g.params.size(); ++k) {
                const std::size_t i = g.params[k];
                quantizeInto(g.data.data() + layout.off[k] * eb(), options.dtype, sliceLength(i), layout.part[k], wire.data(), layout, k);
            }
        }
        const std::vector<std::uint8_t>& local = onTheFly ? wire : useSecondary ? g.secondaryData : g.data;
        const std::size_t bytes = layout.bytes(quantized, eb());
        const std::uint8_t* gathered = local.data();
        std::size_t stride = 0;
        if (members > 1 && bytes > 0) {
            if (staging.size() < members * bytes) staging.resize(members * bytes);
            std::uint8_t* mine = staging.data() + static_cast<std::size_t>(c.rank()) * bytes;
            std::memcpy(mine, local.data(), bytes);
            allgatherInPlace(c, useSecondary ? 4 : 1, staging.data(), bytes);
            gathered = staging.data();
            stride = bytes;
            const std::vector<bool>& intra = useSecondary ? hpzIntra : worldIntra;
            std::uint64_t in = 0, cross = 0;
            for (std::size_t m = 0; m < members; ++m) {
                if (static_cast<int>(m) == c.rank()) continue;
                (intra[m] ? in : cross) += bytes;
            }
            add(&EngineMetrics::gatheredBytes, in + cross);
            if (g.frozen) {
                add(&EngineMetrics::frozenGatherIntraBytes, in);
                add(&EngineMetrics::frozenGatherCrossBytes, cross);
            } else {
                add(&EngineMetrics::trainableGatherIntraBytes, in);
                add(&EngineMetrics::trainableGatherCrossBytes, cross);
            }
        }
        for (std::size_t k = 0; k < g.params.size(); ++k) {
            const ParamInfo& p = params[g.params[k]];
            for (std::size_t m = 0; m < members; ++m) {
                const std::size_t begin = m * layout.part[k];
                if (begin >= p.numel) break;
                const std::size_t valid = std::min(layout.part[k], p.numel - begin);
                const std::uint8_t* member = gathered + m * stride;
                float* out = values + g.foff[k] + begin;
                if (quantized) {
                    dequantizeFrom(member, layout, k, valid, out);
                } else {
                    convertInto(member + layout.off[k] * eb(), options.dtype, out, DType::kFloat32, valid);
                }
            }
        }
        // Persistent parameters (unit 0) are always gathered: a secondary would only cost memory.
        if (!useSecondary && hpzOn() && u != 0) buildSecondary(g, values);
        add(&EngineMetrics::gatherSeconds, secondsSince(start));
    }

    // This rank's hpZ secondary partitions, cut from the full values (zero padding).
    void buildSecondary(Group& g, const float* values) {
        const std::size_t me = static_cast<std::size_t>(hpz->rank());
        g.secondaryData.assign(g.secondary.bytes(g.quantized, eb()), 0);
        for (std::size_t k = 0; k < g.params.size(); ++k) {
            const ParamInfo& p = params[g.params[k]];
            const std::size_t part = g.secondary.part[k];
            const std::size_t begin = std::min(p.numel, me * part);
            const std::size_t valid = std::min(part, p.numel - begin);
            const float* from = values + g.foff[k] + begin;
            if (g.quantized) {
                quantizeInto(from, DType::kFloat32, valid, part, g.secondaryData.data(), g.secondary, k);
            } else {
                convertInto(from, DType::kFloat32, g.secondaryData.data() + g.secondary.off[k] * eb(), options.dtype, valid);
            }
        }
        g.secondaryValid = true;
    }

    // Every collective goes through here: a task that fails leaves this rank's collectives out of
    // step with its peers whatever the exception, so the engine is broken from then on (guarded()).
    std::shared_future<void> submitCollective(std::function<void()> work) {
        return comm->submit([this, work = std::move(work)] {
            try {
                work();
            } catch (const std::exception& error) {
                std::lock_guard<std::mutex> lock(metricsMutex);
                if (commFailure.empty()) commFailure = error.what();
                throw;
            }
        });
    }

    std::shared_future<void> submitGather(std::size_t u, std::size_t gi, float* values) {
        auto future = submitCollective([this, u, gi, values] { gatherInto(u, gi, values); });
        if (!options.zero.overlapComm) future.wait();
        return future;
    }

    void fetch(std::size_t u) {
        for (std::size_t gi = 0; gi < units[u].groups.size(); ++gi) {
            Group& g = units[u].groups[gi];
            if (g.status != Availability::kNotAvailable) continue;
            g.values = pool.take(g.full);
            g.status = Availability::kInflight;
            g.fetched = submitGather(u, gi, g.values);
        }
    }

    std::size_t fullOf(std::size_t u) const {
        std::size_t full = 0;
        for (const Group& g : units[u].groups) full += g.full;
        return full;
    }

    bool anyFetched(std::size_t u) const {
        for (const Group& g : units[u].groups) {
            if (g.status != Availability::kNotAvailable) return true;
        }
        return false;
    }

    std::size_t liveElements() const {
        std::size_t live = 0;
        for (std::size_t u = 1; u < units.size(); ++u) {
            for (const Group& g : units[u].groups) {
                if (g.status != Availability::kNotAvailable) live += g.full;
            }
        }
        return live;
    }

    void ensure(std::size_t u, const std::vector<std::size_t>& order, std::size_t position) {
        fetch(u);
        prefetchAfter(order, position);
        for (Group& g : units[u].groups) {
            if (g.status == Availability::kInflight) {
                const auto start = Clock::now();
                g.fetched.get(); // rethrows the gather's failure
                add(&EngineMetrics::gatherWaitSeconds, secondsSince(start));
                g.status = Availability::kAvailable;
            }
        }
    }

    void prefetchAfter(const std::vector<std::size_t>& order, std::size_t position) {
        if (!options.zero.overlapComm || options.zero.prefetchBucketSize == 0) return;
        std::size_t prefetched = 0;
        for (std::size_t k = position + 1; k < order.size(); ++k) {
            const std::size_t next = order[k];
            const std::size_t full = fullOf(next);
            if (anyFetched(next)) {
                prefetched += full;
                continue;
            }
            if (prefetched + full > options.zero.prefetchBucketSize) break;
            if (liveElements() + full > options.zero.maxLiveParameters) break;
            fetch(next);
            prefetched += full;
        }
    }

    void release(std::size_t u) {
        if (u == 0) return;
        for (Group& g : units[u].groups) {
            if (g.status == Availability::kNotAvailable) continue;
            if (g.status == Availability::kInflight) {
                // Its gather still writes into the buffer; never hand it back before that ends.
                try {
                    g.fetched.wait();
                } catch (...) {
                }
            }
            pool.give(g.values);
            g.values = nullptr;
            g.status = Availability::kNotAvailable;
        }
    }

    void releaseAll() {
        for (std::size_t u = 1; u < units.size(); ++u) release(u);
    }

    // Gathers the persistent groups that changed (all at construction; trainable ones after a
    // step; written ones): frozen persistent parameters are gathered once, not after every step.
    void gatherPersistent() {
        for (std::size_t gi = 0; gi < units[0].groups.size(); ++gi) {
            Group& g = units[0].groups[gi];
            if (!g.stale && g.status == Availability::kAvailable) continue;
            g.persistentValues.resize(g.full);
            float* values = g.persistentValues.data();
            submitCollective([this, gi, values] { gatherInto(0, gi, values); }).get();
            g.values = values;
            g.status = Availability::kAvailable;
            g.stale = false;
        }
        persistentDirty = false;
    }

    const float* valueOf(std::size_t i) const {
        const Group& g = groupOf(i);
        MIXZ_ENFORCE(g.status == Availability::kAvailable, params[i].name, " is not gathered");
        return g.values + g.foff[where[i].index];
    }

    const float* valueOf(const std::string& name) const { return valueOf(indexOf(name)); }

    bool has(const std::string& name) const { return byName.count(name) != 0; }

    std::size_t indexOf(const std::string& name) const {
        auto it = byName.find(name);
        MIXZ_ENFORCE(it != byName.end(), "no parameter ", name);
        return it->second;
    }

    // Where param i's full gradient goes during backward: in its group's gradient buffer, or null
    // for a frozen param.
    float* gradOf(std::size_t i, const std::vector<std::vector<float*>>& grads) const {
        if (!params[i].trainable) return nullptr;
        const ParamLocation& at = where[i];
        float* base = grads[at.unit][at.group];
        MIXZ_ENFORCE(base != nullptr, "no gradient buffer for ", params[i].name);
        return base + groupOf(i).foff[at.index];
    }

    model::LinearParams<float> linear(int layer, const std::string& name) const {
        const std::string path = linearPath(layer, name);
        model::LinearParams<float> lp;
        lp.weight = valueOf(path + ".weight");
        if (has(path + ".lora_A.weight")) {
            lp.loraA = valueOf(path + ".lora_A.weight");
            lp.loraB = valueOf(path + ".lora_B.weight");
            lp.rank = loraOptions.rank;
            lp.loraScale = static_cast<float>(loraOptions.alpha / loraOptions.rank);
            lp.loraDropout = loraOptions.dropout;
            lp.loraDropoutSeed = dropoutSeed(layer, name);
        }
        return lp;
    }

    // The seed of one linear's LoRA dropout mask in the current training forward: distinct per
    // rank (each rank's data differs, as its masks do under PEFT), per training forward, per layer
    // and per linear. Only training forwards read it (the kernels keep it in the layer's cache for
    // the backward).
    std::uint64_t dropoutSeed(int layer, const std::string& name) const {
        const auto linear = static_cast<std::uint64_t>(
            std::find(std::begin(kLinears), std::end(kLinears), name) - std::begin(kLinears));
        std::uint64_t seed = mix(loraOptions.seed ^ 0x4C6F526144726F70ull); // "LoRaDrop"
        for (const std::uint64_t part : {static_cast<std::uint64_t>(rank), trainForwards,
                                         static_cast<std::uint64_t>(layer), linear}) {
            seed = mix(seed ^ part);
        }
        return seed;
    }

    model::LinearGrads<float> linearGrads(int layer, const std::string& name, const std::vector<std::vector<float*>>& grads) const {
        const std::string path = linearPath(layer, name);
        model::LinearGrads<float> lg;
        lg.weight = gradOf(indexOf(path + ".weight"), grads);
        if (has(path + ".lora_A.weight")) {
            lg.loraA = gradOf(indexOf(path + ".lora_A.weight"), grads);
            lg.loraB = gradOf(indexOf(path + ".lora_B.weight"), grads);
        }
        return lg;
    }

    model::DecoderLayerParams<float> layerParams(int layer) const {
        const std::string p = "model.layers." + std::to_string(layer) + ".";
        model::DecoderLayerParams<float> lp;
        lp.inputNorm = valueOf(p + "input_layernorm.weight");
        lp.q = linear(layer, "q_proj");
        lp.k = linear(layer, "k_proj");
        lp.v = linear(layer, "v_proj");
        lp.o = linear(layer, "o_proj");
        lp.postNorm = valueOf(p + "post_attention_layernorm.weight");
        lp.gate = linear(layer, "gate_proj");
        lp.up = linear(layer, "up_proj");
        lp.down = linear(layer, "down_proj");
        return lp;
    }

    model::DecoderLayerGrads<float> layerGrads(int layer, const std::vector<std::vector<float*>>& grads) const {
        const std::string p = "model.layers." + std::to_string(layer) + ".";
        model::DecoderLayerGrads<float> lg;
        lg.inputNorm = gradOf(indexOf(p + "input_layernorm.weight"), grads);
        lg.q = linearGrads(layer, "q_proj", grads);
        lg.k = linearGrads(layer, "k_proj", grads);
        lg.v = linearGrads(layer, "v_proj", grads);
        lg.o = linearGrads(layer, "o_proj", grads);
        lg.postNorm = gradOf(indexOf(p + "post_attention_layernorm.weight"), grads);
        lg.gate = linearGrads(layer, "gate_proj", grads);
        lg.up = linearGrads(layer, "up_proj", grads);
        lg.down = linearGrads(layer, "down_proj", grads);
        return lg;
    }

    model::HeadParams<float> headParams() const {
        model::HeadParams<float> hp;
        hp.norm = valueOf("model.norm.weight");
        hp.lmHead.weight = valueOf("lm_head.weight");
        return hp;
    }

    // --- gradient reduction ----------------------------------------------------------------

    // Runs on the communication thread: reduce-scatters (mean) group g's full gradients and adds
    // this rank's slice into its gradient partition, in chunks of at most reduce_bucket_size / N
    // partition columns.
    void reduceInto(std::size_t u, std::size_t gi, const float* grads) {
        const auto start = Clock::now();
        Group& g = units[u].groups[gi];
        const Layout& layout = g.primary;
        const std::size_t S = layout.elements;
        const std::size_t N = static_cast<std::size_t>(size);
        const std::size_t chunk =
            std::max<std::size_t>(1, std::min(S, std::max<std::size_t>(1, options.zero.reduceBucketSize / N)));
        if (packed.size() < N * chunk) packed.assign(N * chunk, 0.0f);
        if (reduced.size() < chunk) reduced.assign(chunk, 0.0f);
        for (std::size_t a = 0; a < S; a += chunk) {
            const std::size_t b = std::min(S, a + chunk), width = b - a;
            // Member r's columns [a, b): param k's element r·part_k + (j − off_k), zero past its end.
            for (std::size_t k = 0; k < g.params.size(); ++k) {
                const ParamInfo& p = params[g.params[k]];
                const std::size_t lo = std::max(a, layout.off[k]), hi = std::min(b, layout.off[k] + layout.part[k]);
                if (lo >= hi) continue;
                for (std::size_t r = 0; r < N; ++r) {
                    float* dst = packed.data() + r * width + (lo - a);
                    const std::size_t first = r * layout.part[k] + (lo - layout.off[k]);
                    const std::size_t count = hi - lo;
                    const std::size_t valid = first >= p.numel ? 0 : std::min(count, p.numel - first);
                    if (valid > 0) std::memcpy(dst, grads + g.foff[k] + first, valid * sizeof(float));
                    if (valid < count) std::fill(dst + valid, dst + count, 0.0f);
                }
            }
            const float* mine = packed.data();
            if (N > 1 && cross) {
                quantizedReduce(width);
                mine = reduced.data();
            } else if (N > 1) {
                const DType wireType = options.gradientCommDType;
                const std::size_t wireBytes = elementBytes(wireType);
                const void* input = packed.data();
                void* output = reduced.data();
                if (wireType != DType::kFloat32) {
                    // 16-bit on the wire: this rank's contributions rounded once, summed in fp32.
                    gradWire.resize(N * width * wireBytes);
                    gradWireOut.resize(width * wireBytes);
                    convertInto(packed.data(), DType::kFloat32, gradWire.data(), wireType, N * width);
                    input = gradWire.data();
                    output = gradWireOut.data();
                }
                reduceScatter(*world, 2, input, output, width, wireType, comm::ReduceOp::kMean);
                if (wireType != DType::kFloat32) convertInto(gradWireOut.data(), wireType, reduced.data(), DType::kFloat32, width);
                mine = reduced.data();
                std::uint64_t in = 0, cross = 0;
                for (std::size_t m = 0; m < N; ++m) {
                    if (static_cast<int>(m) == rank) continue;
                    (worldIntra[m] ? in : cross) += width * wireBytes;
                }
                add(&EngineMetrics::reducedBytes, static_cast<std::uint64_t>(N) * width * wireBytes);
                add(&EngineMetrics::reduceIntraBytes, in);
                add(&EngineMetrics::reduceCrossBytes, cross);
            }
            accumulateGrad(g, a, mine, width);
        }
        add(&EngineMetrics::reduceSeconds, secondsSince(start));
    }

    // qgZ: `packed` holds N chunks of `width` (chunk d for world rank d = k·L + l, node k, local
    // rank l); `reduced` gets the mean over all ranks of this rank's chunk. Level 1: the node's
    // ranks reduce-scatter in fp32 (chunks reordered so local rank l receives the node's sums of
    // every chunk (k', l)). Level 2: those K sums are quantized to int4 blocks and gathered over
    // the cross group (the ranks of local index l, one per node); each rank dequantizes chunk k
    // (its own node's index) of every node's blob and sums. Then ÷ N: the true mean.
    void quantizedReduce(std::size_t width) {
        const std::size_t L = node ? static_cast<std::size_t>(node->size()) : 1;
        const std::size_t K = static_cast<std::size_t>(cross->size());
        const std::size_t k = static_cast<std::size_t>(cross->rank());
        // Reorder into local-rank-major order: part l' = chunks (0, l'), (1, l'), …, (K−1, l').
        reorder.resize(L * K * width);
        for (std::size_t lp = 0; lp < L; ++lp) {
            for (std::size_t kp = 0; kp < K; ++kp) {
                std::memcpy(reorder.data() + (lp * K + kp) * width, packed.data() + (kp * L + lp) * width, width * sizeof(float));
            }
        }
        nodeReduced.resize(K * width);
        if (L > 1) {
            reduceScatter(*node, 5, reorder.data(), nodeReduced.data(), K * width, DType::kFloat32, comm::ReduceOp::kSum);
            add(&EngineMetrics::reduceIntraBytes, static_cast<std::uint64_t>(L - 1) * K * width * sizeof(float));
        } else {
            std::memcpy(nodeReduced.data(), reorder.data(), K * width * sizeof(float));
        }
        // Level 2: int4 blocks per chunk: codes then scales, per chunk, per member.
        const std::size_t block = options.quantBlockSize;
        const std::size_t codes = quant::quantizedBytes(width, 4);
        const std::size_t scales = quant::blockCount(width, block);
        const std::size_t chunkBytes = alignUp(codes, 4) + scales * sizeof(float);
        const std::size_t blobBytes = K * chunkBytes;
        qgzGathered.assign(K * blobBytes, 0);
        std::uint8_t* mineBlob = qgzGathered.data() + k * blobBytes;
        for (std::size_t c = 0; c < K; ++c) {
            quant::QuantizeOptions q;
            q.input = nodeReduced.data() + c * width;
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
        allgatherInPlace(*cross, 6, qgzGathered.data(), blobBytes);
        add(&EngineMetrics::reduceCrossBytes, static_cast<std::uint64_t>(K - 1) * blobBytes);
        add(&EngineMetrics::reducedBytes, static_cast<std::uint64_t>(K - 1) * blobBytes + static_cast<std::uint64_t>(L - 1) * K * width * sizeof(float));
        // Sum chunk k of every node: our own node's exact fp32 sum, the others dequantized.
        reduced.assign(width, 0.0f);
        std::vector<float>& part = dequantized;
        part.resize(width);
        for (std::size_t kp = 0; kp < K; ++kp) {
            const float* source = nodeReduced.data() + k * width;
            if (kp != k) {
                const std::uint8_t* chunk = qgzGathered.data() + kp * blobBytes + k * chunkBytes;
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
            for (std::size_t j = 0; j < width; ++j) reduced[j] += source[j];
        }
        const float inverse = 1.0f / static_cast<float>(size);
        for (std::size_t j = 0; j < width; ++j) reduced[j] *= inverse;
    }

    void accumulateGrad(Group& g, std::size_t offset, const float* values, std::size_t count) {
        if (options.dtype == DType::kFloat32) {
            float* grad = reinterpret_cast<float*>(g.grad.data()) + offset;
            for (std::size_t j = 0; j < count; ++j) grad[j] += values[j];
            return;
        }
        // Accumulate in fp32 and round once to the model dtype (DeepSpeed's default gradient
        // accumulation dtype).
        std::vector<float>& sum = gradSum; // the communication thread's, reused: no allocation per chunk
        sum.resize(count);
        convertInto(g.grad.data() + offset * eb(), options.dtype, sum.data(), DType::kFloat32, count);
        for (std::size_t j = 0; j < count; ++j) sum[j] += values[j];
        convertInto(sum.data(), DType::kFloat32, g.grad.data() + offset * eb(), options.dtype, count);
    }

    void submitReduce(std::size_t u, std::size_t gi, float* grads, bool pooled) {
        pendingReduces.push_back(submitCollective([this, u, gi, grads, pooled] {
            struct GiveBack {
                BufferPool* pool;
                float* grads;
                bool pooled;
                ~GiveBack() {
                    if (pooled) pool->give(grads);
                }
            } giveBack{&pool, grads, pooled};
            reduceInto(u, gi, grads);
        }));
    }

    // Gradient buffers for unit u's trainable groups (null for frozen ones).
    void takeGrads(std::size_t u, std::vector<std::vector<float*>>& grads) {
        grads[u].assign(units[u].groups.size(), nullptr);
        for (std::size_t gi = 0; gi < units[u].groups.size(); ++gi) {
            const Group& g = units[u].groups[gi];
            if (!g.frozen && g.full > 0) grads[u][gi] = pool.take(g.full);
        }
    }

    void submitReduces(std::size_t u, std::vector<std::vector<float*>>& grads) {
        for (std::size_t gi = 0; gi < units[u].groups.size(); ++gi) {
            if (grads[u][gi] != nullptr) submitReduce(u, gi, grads[u][gi], true);
            grads[u][gi] = nullptr;
        }
    }

    void waitReduces() {
        const auto start = Clock::now();
        std::exception_ptr first;
        for (auto& future : pendingReduces) {
            try {
                future.get();
            } catch (...) {
                if (!first) first = std::current_exception();
            }
        }
        pendingReduces.clear();
        add(&EngineMetrics::reduceWaitSeconds, secondsSince(start));
        if (first) std::rethrow_exception(first);
    }

    // After a failure: let every queued collective finish or fail, so no task touches a buffer we
    // are about to reuse, and return every gathered buffer.
    void settle() {
        for (auto& future : pendingReduces) {
            try {
                future.wait();
            } catch (...) {
            }
        }
        pendingReduces.clear();
        for (std::size_t u = 1; u < backwardGrads.size(); ++u) {
            for (float*& buffer : backwardGrads[u]) {
                pool.give(buffer);
                buffer = nullptr;
            }
        }
        releaseAll();
        heldUnit = 0;
        haveTrainForward = false;
    }

    template <typename Body>
    auto guarded(Body&& body) -> decltype(body()) {
        requireUsable();
        try {
            return body();
        } catch (const IoError& error) {
            broken = error.what();
            settle();
            throw;
        } catch (...) {
            settle();
            std::lock_guard<std::mutex> lock(metricsMutex);
            if (!commFailure.empty()) broken = commFailure;
            throw;
        }
    }

    std::size_t activationBytes() const {
        std::size_t bytes = headCache.bytes();
        for (const auto& cache : caches) bytes += cache.bytes();
        for (const auto& h : hidden) bytes += h.capacity() * sizeof(float);
        bytes += (gradA.capacity() + gradB.capacity()) * sizeof(float);
        for (const auto& g : persistentGrads) bytes += g.capacity() * sizeof(float);
        return bytes;
    }

    void validateIds(const std::int32_t* ids, std::size_t tokens) const {
        for (std::size_t t = 0; t < tokens; ++t) {
            if (ids[t] < 0 || ids[t] >= options.dims.vocab) {
                MIXZ_THROW(InvalidArgument, "token id ", ids[t], " at position ", t, " is outside the vocabulary [0, ", options.dims.vocab, ")");
            }
        }
    }

    std::vector<std::size_t> forwardOrder() const {
        std::vector<std::size_t> order{1};
        for (int i = 0; i < options.dims.layers; ++i) order.push_back(layerUnit(i));
        order.push_back(headUnit());
        return order;
    }
};

Engine::Engine(const EngineOptions& options, std::shared_ptr<comm::Communicator> world, Groups groups)
    : state_(std::make_unique<State>()) {
    std::shared_ptr<comm::Communicator> hpz = std::move(groups.hpz);
    State& s = *state_;
    model::validate(options.dims);
    if (!world || !world->connected()) MIXZ_THROW(InvalidArgument, "the engine needs a connected communicator");
    if (options.dtype != DType::kFloat32 && options.dtype != DType::kFloat16 && options.dtype != DType::kBFloat16) {
        MIXZ_THROW(InvalidArgument, "the model dtype must be fp32, fp16 or bf16");
    }
    if (!quant::isValidBlockSize(options.quantBlockSize)) {
        MIXZ_THROW(InvalidArgument, "quantBlockSize must be a power of two in [8, 65536], got ", options.quantBlockSize);
    }
    s.options = options;
    s.world = std::move(world);
    s.rank = s.world->rank();
    s.size = s.world->size();
    if (hpz) {
        if (!hpz->connected() || hpz->kind() != comm::GroupKind::kHpz) MIXZ_THROW(InvalidArgument, "hpz must be a connected hpZ group");
        // A group of one or of the whole world holds nothing a primary does not.
        if (hpz->size() > 1 && hpz->size() < s.size) s.hpz = std::move(hpz);
    }
    const int perNode = groups.node ? groups.node->size() : 1;
    if (options.quantizeGradients && groups.cross && groups.cross->size() > 1 && perNode * groups.cross->size() == s.size) {
        s.node = std::move(groups.node); // null: one rank per node
        s.cross = std::move(groups.cross);
    }
    model::setKernelThreads(std::max(1, options.kernelThreads));
    s.caches.resize(static_cast<std::size_t>(options.dims.layers));
    s.build();
    s.comm = std::make_unique<CommThread>();
    s.gatherPersistent();
}

Engine::~Engine() {
    if (!state_) return;
    state_->settle();
    state_->comm.reset();
}

const std::vector<ParamInfo>& Engine::params() const {
    // hasSecondary changes with gathers and steps: refresh it for the caller.
    State& s = *state_;
    for (std::size_t i = 0; i < s.params.size(); ++i) s.params[i].hasSecondary = s.hpzOn() && s.groupOf(i).secondaryValid;
    return s.params;
}
int Engine::rank() const { return state_->rank; }
int Engine::worldSize() const { return state_->size; }

ForwardResult Engine::forward(const Batch& batch, bool train) {
    State& s = *state_;
    const model::LlamaDims& d = s.options.dims;
    if (batch.micro <= 0 || batch.seq <= 0) MIXZ_THROW(InvalidArgument, "the batch shape must be positive, got [", batch.micro, ", ", batch.seq, "]");
    if (batch.seq > d.maxSeq) MIXZ_THROW(InvalidArgument, "sequence length ", batch.seq, " exceeds the model's maxSeqLen ", d.maxSeq);
    const std::size_t tokens = static_cast<std::size_t>(batch.micro) * static_cast<std::size_t>(batch.seq);
    s.validateIds(batch.inputIds, tokens);
    if (train && batch.labels == nullptr) MIXZ_THROW(InvalidArgument, "a training forward needs labels");
    return s.guarded([&]() -> ForwardResult {
        if (!s.pendingReduces.empty()) s.waitReduces();
        if (s.persistentDirty) s.gatherPersistent();
        s.haveTrainForward = false;
        if (train) ++s.trainForwards;
        const auto computeStart = Clock::now();
        double waited = 0;
        {
            std::lock_guard<std::mutex> lock(s.metricsMutex);
            waited = s.metrics.gatherWaitSeconds;
        }
        const std::size_t width = tokens * static_cast<std::size_t>(d.hidden);
        s.hidden.resize(static_cast<std::size_t>(d.layers) + 1);
        for (auto& h : s.hidden) h.resize(width);
        const std::vector<std::size_t> order = s.forwardOrder();

        s.ensure(1, order, 0);
        model::embeddingForward<float>(d, batch.inputIds, tokens, s.valueOf("model.embed_tokens.weight"), s.hidden[0].data());
        s.release(1);
        for (int i = 0; i < d.layers; ++i) {
            const std::size_t u = s.layerUnit(i);
            s.ensure(u, order, static_cast<std::size_t>(i) + 1);
            model::decoderLayerForward<float>(d, batch.micro, batch.seq, s.layerParams(i),
                                              s.hidden[static_cast<std::size_t>(i)].data(),
                                              s.hidden[static_cast<std::size_t>(i) + 1].data(),
                                              train ? &s.caches[static_cast<std::size_t>(i)] : nullptr);
            s.release(u);
        }
        ForwardResult result;
        const std::size_t head = s.headUnit();
        s.ensure(head, order, order.size() - 1);
        if (batch.labels != nullptr) {
            const model::LossResult loss = model::headForward<float>(d, batch.micro, batch.seq, s.headParams(), s.hidden.back().data(),
                                                                      batch.labels, -100, train ? &s.headCache : nullptr);
            result.loss = loss.loss;
            result.counted = loss.counted;
        }
        if (train) {
            // The head's backward comes next: keep it gathered (its reuse distance is zero).
            s.ids.assign(batch.inputIds, batch.inputIds + tokens);
            s.micro = batch.micro;
            s.seq = batch.seq;
            s.haveTrainForward = true;
        } else {
            s.release(head);
        }
        std::lock_guard<std::mutex> lock(s.metricsMutex);
        s.metrics.computeSeconds += secondsSince(computeStart) - (s.metrics.gatherWaitSeconds - waited);
        s.activationsPeak = std::max(s.activationsPeak, s.activationBytes());
        return result;
    });
}

void Engine::backward(double lossGrad) {
    State& s = *state_;
    if (!s.haveTrainForward) MIXZ_THROW(InvalidArgument, "backward() needs a training forward() first (each forward is used by one backward)");
    s.guarded([&] {
        const model::LlamaDims& d = s.options.dims;
        const auto computeStart = Clock::now();
        double waited = 0;
        {
            std::lock_guard<std::mutex> lock(s.metricsMutex);
            waited = s.metrics.gatherWaitSeconds;
        }
        const std::size_t width = static_cast<std::size_t>(s.micro) * static_cast<std::size_t>(s.seq) * static_cast<std::size_t>(d.hidden);
        s.gradA.resize(width);
        s.gradB.resize(width);
        // Gradient buffers per unit and group; the persistent unit's are members (a failure's
        // settle() may still wait on their reductions after this frame is gone).
        std::vector<std::vector<float*>>& grads = s.backwardGrads;
        grads.assign(s.units.size(), {});
        s.persistentGrads.resize(s.units[0].groups.size());
        grads[0].assign(s.units[0].groups.size(), nullptr);
        for (std::size_t gi = 0; gi < s.units[0].groups.size(); ++gi) {
            if (s.units[0].groups[gi].frozen) continue;
            s.persistentGrads[gi].assign(s.units[0].groups[gi].full, 0.0f);
            grads[0][gi] = s.persistentGrads[gi].data();
        }
        const bool embeddingTrainable = s.params[s.indexOf("model.embed_tokens.weight")].trainable;
        std::vector<std::size_t> order{s.headUnit()};
        for (int i = d.layers - 1; i >= 0; --i) order.push_back(s.layerUnit(i));
        // A frozen embedding has no backward: do not prefetch it.
        if (embeddingTrainable) order.push_back(1);

        {
            const std::size_t head = s.headUnit();
            s.ensure(head, order, 0);
            s.takeGrads(head, grads);
            model::HeadGrads<float> hg;
            hg.norm = s.gradOf(s.indexOf("model.norm.weight"), grads);
            hg.lmHead.weight = s.gradOf(s.indexOf("lm_head.weight"), grads);
            model::headBackward<float>(d, s.micro, s.seq, s.headParams(), s.headCache, static_cast<float>(lossGrad), s.gradA.data(), hg);
            s.release(head);
            s.submitReduces(head, grads);
        }
        float* dy = s.gradA.data();
        float* dx = s.gradB.data();
        for (int i = d.layers - 1; i >= 0; --i) {
            const std::size_t u = s.layerUnit(i);
            s.ensure(u, order, static_cast<std::size_t>(d.layers - i));
            s.takeGrads(u, grads);
            // The first layer's input gradient is only needed to train the embedding.
            float* input = (i == 0 && !embeddingTrainable) ? nullptr : dx;
            model::decoderLayerBackward<float>(d, s.micro, s.seq, s.layerParams(i), s.caches[static_cast<std::size_t>(i)], dy, input,
                                               s.layerGrads(i, grads));
            s.release(u);
            s.submitReduces(u, grads);
            std::swap(dx, dy);
        }
        if (embeddingTrainable) {
            s.ensure(1, order, order.size() - 1);
            s.takeGrads(1, grads);
            model::embeddingBackward<float>(d, s.ids.data(), s.ids.size(), dy, s.gradOf(s.indexOf("model.embed_tokens.weight"), grads));
            s.release(1);
            s.submitReduces(1, grads);
        }
        for (std::size_t gi = 0; gi < s.units[0].groups.size(); ++gi) {
            if (grads[0][gi] != nullptr) s.submitReduce(0, gi, grads[0][gi], false);
        }
        {
            std::lock_guard<std::mutex> lock(s.metricsMutex);
            s.metrics.computeSeconds += secondsSince(computeStart) - (s.metrics.gatherWaitSeconds - waited);
        }
        s.waitReduces();
        s.haveTrainForward = false;
    });
}

void Engine::zeroGradients() {
    for (Unit& unit : state_->units) {
        for (Group& g : unit.groups) std::fill(g.grad.begin(), g.grad.end(), 0);
    }
}

StepResult Engine::step(const StepOptions& options) {
    State& s = *state_;
    return s.guarded([&]() -> StepResult {
        if (!s.pendingReduces.empty()) s.waitReduces();
        s.releaseAll();
        s.haveTrainForward = false;
        const auto start = Clock::now();
        StepResult result;
        std::vector<float> scratch;
        auto gradOfGroup = [&](const Group& g) -> const float* {
            if (s.options.dtype == DType::kFloat32) return reinterpret_cast<const float*>(g.grad.data());
            scratch.resize(g.primary.elements);
            convertInto(g.grad.data(), s.options.dtype, scratch.data(), DType::kFloat32, g.primary.elements);
            return scratch.data();
        };
        auto allreduce = [&](float value, comm::ReduceOp op) {
            float out = value;
            if (s.size == 1) return out;
            s.submitCollective([&] {
                 comm::AllreduceOptions o(*s.world);
                 o.tag = s.options.tagBase + 3;
                 o.timeout = s.options.timeout;
                 o.input = &value;
                 o.output = &out;
                 o.count = 1;
                 o.dtype = DType::kFloat32;
                 o.op = op;
                 comm::allreduce(o);
             }).get();
            return out;
        };
        auto forTrainable = [&](auto&& fn) {
            for (Unit& unit : s.units) {
                for (Group& g : unit.groups) {
                    if (!g.frozen) fn(g);
                }
            }
        };

        // Squares summed in double per partition, then one all-reduce: also the overflow check
        // (a non-finite gradient makes the sum non-finite on every rank alike).
        double squares = 0;
        forTrainable([&](Group& g) {
            const float* grad = gradOfGroup(g);
            double local = 0;
            for (std::size_t j = 0; j < g.primary.elements; ++j) local += static_cast<double>(grad[j]) * grad[j];
            squares += local;
        });
        const float total = allreduce(static_cast<float>(squares), comm::ReduceOp::kSum);
        const bool finite = std::isfinite(total);
        if (!finite && options.checkOverflow) {
            result.overflow = true;
            result.gradNorm = -1;
            forTrainable([&](Group& g) { std::fill(g.grad.begin(), g.grad.end(), 0); });
            s.add(&EngineMetrics::optimizerSeconds, secondsSince(start));
            return result;
        }
        const double scaledNorm = finite ? std::sqrt(static_cast<double>(total)) : -1;
        result.gradNorm = finite ? scaledNorm / options.lossScale : -1;
        double combined = options.lossScale;
        if (options.gradientClipping > 0 && finite) {
            const double clip = ((scaledNorm / options.lossScale) + 1e-6) / options.gradientClipping;
            if (clip > 1) combined = options.lossScale * clip;
        }
        const OptimizerOptions& o = s.options.optimizer;
        ++s.steps;
        const double t = static_cast<double>(s.steps);
        const float stepSize = static_cast<float>(options.lr / (1.0 - std::pow(o.beta1, t)));
        const float invSqrtBc2 = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(o.beta2, t)));
        const float b1 = static_cast<float>(o.beta1), b2 = static_cast<float>(o.beta2);
        const float eps = static_cast<float>(o.eps);
        const float decay = static_cast<float>(1.0 - options.lr * o.weightDecay);
        const float l2 = static_cast<float>(o.weightDecay);
        const float invCombined = static_cast<float>(1.0 / combined);
        forTrainable([&](Group& g) {
            const float* grad = gradOfGroup(g);
            float* p = g.master.empty() ? reinterpret_cast<float*>(g.data.data()) : g.master.data();
            float* m = g.expAvg.data();
            float* v = g.expAvgSq.data();
            const std::size_t n = g.primary.elements;
            // torch.optim.AdamW / Adam (weight_decay as L2), element-wise, vectorizable.
            for (std::size_t j = 0; j < n; ++j) {
                float gj = grad[j] * invCombined;
                if (!o.decoupledWeightDecay) gj += l2 * p[j];
                m[j] = b1 * m[j] + (1.0f - b1) * gj;
                v[j] = b2 * v[j] + (1.0f - b2) * gj * gj;
                const float denom = std::sqrt(v[j]) * invSqrtBc2 + eps;
                float pj = p[j];
                if (o.decoupledWeightDecay) pj *= decay;
                p[j] = pj - stepSize * m[j] / denom;
            }
            if (!g.master.empty()) convertInto(g.master.data(), DType::kFloat32, g.data.data(), s.options.dtype, n);
            std::fill(g.grad.begin(), g.grad.end(), 0);
            // zeropp.md §2.4 step 5: trainable secondaries hold the old values.
            g.secondaryValid = false;
            g.stale = true;
        });
        s.gatherPersistent();
        s.add(&EngineMetrics::optimizerSeconds, secondsSince(start));
        return result;
    });
}

void Engine::applyLora(const LoraOptions& options) {
    State& s = *state_;
    s.requireUsable();
    if (s.lora) MIXZ_THROW(InvalidArgument, "LoRA is already applied to this model");
    if (options.rank < 1) MIXZ_THROW(InvalidArgument, "LoRA rank r must be at least 1, got ", options.rank);
    if (!(options.alpha > 0)) MIXZ_THROW(InvalidArgument, "LoRA alpha must be positive, got ", options.alpha);
    if (!(options.dropout >= 0 && options.dropout < 1)) {
        MIXZ_THROW(InvalidArgument, "LoRA dropout must be in [0, 1), got ", options.dropout);
    }
    if (options.targets.empty()) MIXZ_THROW(InvalidArgument, "LoRA needs at least one target module");
    for (const std::string& target : options.targets) {
        if (std::find(std::begin(kLinears), std::end(kLinears), target) == std::end(kLinears)) {
            MIXZ_THROW(InvalidArgument, "unknown LoRA target module \"", target, "\" (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
        }
    }
    if (s.haveTrainForward || !s.pendingReduces.empty()) MIXZ_THROW(InvalidArgument, "apply LoRA between steps, not between forward and backward");
    s.releaseAll();
    // Freeze the base: DeepSpeed keeps no gradient or optimizer state for frozen parameters.
    for (ParamInfo& p : s.params) p.trainable = false;
    for (Unit& unit : s.units) {
        for (Group& g : unit.groups) {
            g.frozen = true;
            std::vector<std::uint8_t>().swap(g.grad);
            std::vector<float>().swap(g.master);
            std::vector<float>().swap(g.expAvg);
            std::vector<float>().swap(g.expAvgSq);
        }
    }
    // One trainable group per unit for the adapters (group index = the unit's group count now).
    std::vector<std::size_t> loraGroup(s.units.size());
    for (std::size_t u = 0; u < s.units.size(); ++u) loraGroup[u] = s.units[u].groups.size();
    const std::size_t firstNew = s.params.size();
    const model::LlamaDims& d = s.options.dims;
    for (int i = 0; i < d.layers; ++i) {
        for (const char* linear : kLinears) {
            if (std::find(options.targets.begin(), options.targets.end(), linear) == options.targets.end()) continue;
            const std::string path = linearPath(i, linear);
            const ParamInfo& base = s.params[s.indexOf(path + ".weight")];
            const std::int64_t out = base.shape[0], in = base.shape[1];
            const std::size_t u = s.layerUnit(i);
            s.addParam(path + ".lora_A.weight", {options.rank, in}, u, loraGroup[u], true);
            s.addParam(path + ".lora_B.weight", {out, options.rank}, u, loraGroup[u], true);
        }
    }
    for (std::size_t u = 0; u < s.units.size(); ++u) {
        if (s.units[u].groups.size() > loraGroup[u]) s.allocate(s.units[u].groups[loraGroup[u]]);
    }
    std::vector<float> values;
    for (std::size_t i = firstNew; i < s.params.size(); ++i) {
        const ParamInfo& p = s.params[i];
        values.assign(p.partition, 0.0f);
        const std::string suffix = ".lora_A.weight";
        const bool isA = p.name.size() > suffix.size() && p.name.compare(p.name.size() - suffix.size(), suffix.size(), suffix) == 0;
        if (isA) {
            // PEFT: kaiming_uniform_(a=√5) on [r, in] gives bound 1/√in.
            const double bound = 1.0 / std::sqrt(static_cast<double>(p.shape[1]));
            const std::size_t begin = s.sliceBegin(i), length = s.sliceLength(i);
            for (std::size_t j = 0; j < length; ++j) {
                const std::uint64_t bits = mix(options.seed ^ mix(i * 0x9E3779B1ull + 7) ^ mix(begin + j));
                const double uniform = static_cast<double>(bits >> 11) / 9007199254740992.0;
                values[j] = static_cast<float>((2.0 * uniform - 1.0) * bound);
            }
        }
        s.writePartition(i, values.data(), true);
    }
    s.lora = true;
    s.loraOptions = options;
    if (s.units[0].groups.size() > loraGroup[0]) s.persistentDirty = true;
}

QuantizeReport Engine::quantizeNontrainable() {
    State& s = *state_;
    return s.guarded([&]() -> QuantizeReport {
        if (s.haveTrainForward || !s.pendingReduces.empty()) MIXZ_THROW(InvalidArgument, "quantize between steps, not between forward and backward");
        s.releaseAll();
        QuantizeReport report;
        for (std::size_t u = 1; u < s.units.size(); ++u) {
            for (std::size_t gi = 0; gi < s.units[u].groups.size(); ++gi) {
                Group& g = s.units[u].groups[gi];
                if (!g.frozen || g.quantized || g.full == 0) continue;
                report.parameters += g.params.size();
                report.bytesBefore += g.data.size() + (g.secondaryValid ? g.secondaryData.size() : 0);
                // The real values, gathered exactly (16-bit → fp32 is exact), for the secondary.
                struct Pooled {
                    BufferPool& pool;
                    float* buffer;
                    ~Pooled() { pool.give(buffer); }
                } pooled{s.pool, s.hpzOn() ? s.pool.take(g.full) : nullptr};
                float* values = pooled.buffer;
                if (values != nullptr) s.submitCollective([&s, u, gi, values] { s.gatherInto(u, gi, values, /*exact=*/true); }).get();
                std::vector<std::uint8_t> blob(g.primary.bytes(true, s.eb()), 0);
                for (std::size_t k = 0; k < g.params.size(); ++k) {
                    const std::size_t i = g.params[k];
                    s.quantizeInto(g.data.data() + g.primary.off[k] * s.eb(), s.options.dtype, s.sliceLength(i), g.primary.part[k], blob.data(), g.primary, k);
                }
                g.data.swap(blob);
                g.quantized = true;
                if (values != nullptr) s.buildSecondary(g, values);
                for (std::size_t i : g.params) s.params[i].quantized = true;
                report.bytesAfter += g.data.size() + (g.secondaryValid ? g.secondaryData.size() : 0);
            }
        }
        return report;
    });
}

std::vector<std::int32_t> Engine::generate(const std::int32_t* prompt, const GenerateOptions& options) {
    State& s = *state_;
    const model::LlamaDims& d = s.options.dims;
    if (options.batch < 1 || options.promptLength < 1 || options.maxNewTokens < 1) {
        MIXZ_THROW(InvalidArgument, "generate needs batch, prompt length and maxNewTokens ≥ 1");
    }
    if (options.promptLength + options.maxNewTokens > d.maxSeq) {
        MIXZ_THROW(InvalidArgument, "prompt length ", options.promptLength, " + maxNewTokens ", options.maxNewTokens, " exceeds the model's maxSeqLen ", d.maxSeq);
    }
    const std::size_t batch = static_cast<std::size_t>(options.batch);
    s.validateIds(prompt, batch * static_cast<std::size_t>(options.promptLength));
    if (s.haveTrainForward) MIXZ_THROW(InvalidArgument, "generate() between forward() and backward() would discard the activations backward needs");
    return s.guarded([&]() -> std::vector<std::int32_t> {
        if (!s.pendingReduces.empty()) s.waitReduces();
        if (s.persistentDirty) s.gatherPersistent();
        std::vector<model::KvCache<float>> kv;
        for (int i = 0; i < d.layers; ++i) kv.emplace_back(d, options.batch);
        std::vector<std::int32_t> out(batch * static_cast<std::size_t>(options.maxNewTokens));
        std::vector<std::int32_t> tokens(prompt, prompt + batch * static_cast<std::size_t>(options.promptLength));
        const std::vector<std::size_t> order = s.forwardOrder();
        const std::size_t H = static_cast<std::size_t>(d.hidden), V = static_cast<std::size_t>(d.vocab);
        std::vector<float> x, y, last(batch * H), logits(batch * V);
        std::vector<std::pair<float, int>> ranked(V);
        int seq = options.promptLength;
        for (int step = 0; step < options.maxNewTokens; ++step) {
            const std::size_t rows = batch * static_cast<std::size_t>(seq);
            x.resize(rows * H);
            y.resize(rows * H);
            s.ensure(1, order, 0);
            model::embeddingForward<float>(d, tokens.data(), rows, s.valueOf("model.embed_tokens.weight"), x.data());
            s.release(1);
            for (int i = 0; i < d.layers; ++i) {
                const std::size_t u = s.layerUnit(i);
                s.ensure(u, order, static_cast<std::size_t>(i) + 1);
                model::decoderLayerForwardCached<float>(d, seq, s.layerParams(i), x.data(), y.data(), kv[static_cast<std::size_t>(i)]);
                s.release(u);
                std::swap(x, y);
            }
            for (std::size_t b = 0; b < batch; ++b) {
                std::memcpy(last.data() + b * H, x.data() + (b * static_cast<std::size_t>(seq) + static_cast<std::size_t>(seq) - 1) * H, H * sizeof(float));
            }
            s.ensure(s.headUnit(), order, order.size() - 1);
            model::headLogits<float>(d, batch, s.headParams(), last.data(), logits.data());
            s.release(s.headUnit());
            tokens.assign(batch, 0);
            for (std::size_t b = 0; b < batch; ++b) {
                const float* row = logits.data() + b * V;
                int chosen = 0;
                if (options.temperature <= 0) {
                    chosen = static_cast<int>(std::max_element(row, row + V) - row);
                } else {
                    for (std::size_t v = 0; v < V; ++v) ranked[v] = {row[v], static_cast<int>(v)};
                    std::size_t keep = V;
                    if (options.topK > 0 && static_cast<std::size_t>(options.topK) < V) {
                        keep = static_cast<std::size_t>(options.topK);
                        std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(keep), ranked.end(),
                                          [](const auto& a, const auto& c) { return a.first > c.first || (a.first == c.first && a.second < c.second); });
                    }
                    float top = -std::numeric_limits<float>::infinity();
                    for (std::size_t v = 0; v < keep; ++v) top = std::max(top, ranked[v].first);
                    double total = 0;
                    std::vector<double> weights(keep);
                    for (std::size_t v = 0; v < keep; ++v) total += (weights[v] = std::exp((ranked[v].first - top) / options.temperature));
                    const std::uint64_t bits = mix(options.seed ^ mix(b * 0x100000001B3ull + static_cast<std::uint64_t>(step) * 0x9E3779B97F4A7C15ull + 11));
                    double target = static_cast<double>(bits >> 11) / 9007199254740992.0 * total;
                    chosen = ranked[keep - 1].second;
                    for (std::size_t v = 0; v < keep; ++v) {
                        target -= weights[v];
                        if (target < 0) {
                            chosen = ranked[v].second;
                            break;
                        }
                    }
                }
                out[b * static_cast<std::size_t>(options.maxNewTokens) + static_cast<std::size_t>(step)] = chosen;
                tokens[b] = chosen;
            }
            seq = 1;
        }
        return out;
    });
}

std::vector<float> Engine::gatherParameter(std::size_t index) {
    State& s = *state_;
    if (index >= s.params.size()) MIXZ_THROW(InvalidArgument, "no parameter with index ", index);
    if (s.haveTrainForward) MIXZ_THROW(InvalidArgument, "gatherParameter() between forward() and backward()");
    return s.guarded([&]() -> std::vector<float> {
        if (!s.pendingReduces.empty()) s.waitReduces();
        if (s.persistentDirty) s.gatherPersistent();
        const std::size_t u = s.where[index].unit;
        // Consecutive parameters of one unit (an export walks them in order) share one gather.
        if (s.heldUnit != u) s.release(s.heldUnit);
        s.ensure(u, {u}, 0);
        s.heldUnit = u;
        const float* values = s.valueOf(index);
        return std::vector<float>(values, values + s.params[index].numel);
    });
}

std::size_t Engine::sliceBegin(std::size_t param) const {
    MIXZ_ENFORCE(param < state_->params.size(), "parameter index ", param);
    return state_->sliceBegin(param);
}

std::size_t Engine::sliceLength(std::size_t param) const {
    MIXZ_ENFORCE(param < state_->params.size(), "parameter index ", param);
    return state_->sliceLength(param);
}

void Engine::readSlice(std::size_t param, const std::string& kind, float* out) const {
    const State& s = *state_;
    if (param >= s.params.size()) MIXZ_THROW(InvalidArgument, "no parameter with index ", param);
    const Group& g = s.groupOf(param);
    const std::size_t k = s.where[param].index;
    const std::size_t off = g.primary.off[k];
    const std::size_t n = s.sliceLength(param);
    const bool fp32 = s.options.dtype == DType::kFloat32;
    const bool trainable = s.params[param].trainable;
    if (kind == "param" || (kind == "master" && fp32 && trainable)) {
        if (g.quantized) {
            s.dequantizeFrom(g.data.data(), g.primary, k, n, out);
        } else {
            convertInto(g.data.data() + off * s.eb(), s.options.dtype, out, DType::kFloat32, n);
        }
        return;
    }
    if (kind != "master" && kind != "exp_avg" && kind != "exp_avg_sq" && kind != "grad") {
        MIXZ_THROW(InvalidArgument, "unknown state kind \"", kind, "\" (param, master, exp_avg, exp_avg_sq, grad)");
    }
    if (!trainable) MIXZ_THROW(InvalidArgument, s.params[param].name, " is frozen: it has no ", kind);
    if (kind == "master") {
        std::memcpy(out, g.master.data() + off, n * sizeof(float));
    } else if (kind == "exp_avg") {
        std::memcpy(out, g.expAvg.data() + off, n * sizeof(float));
    } else if (kind == "exp_avg_sq") {
        std::memcpy(out, g.expAvgSq.data() + off, n * sizeof(float));
    } else {
        convertInto(g.grad.data() + off * s.eb(), s.options.dtype, out, DType::kFloat32, n);
    }
}

void Engine::writeSlice(std::size_t param, const std::string& kind, const float* data) {
    State& s = *state_;
    if (param >= s.params.size()) MIXZ_THROW(InvalidArgument, "no parameter with index ", param);
    Group& g = s.groupOf(param);
    const std::size_t off = g.primary.off[s.where[param].index];
    const std::size_t n = s.sliceLength(param);
    const bool fp32 = s.options.dtype == DType::kFloat32;
    const bool trainable = s.params[param].trainable;
    if (kind == "param" || (kind == "master" && fp32 && trainable)) {
        // Gathered copies (a unit kept from a forward, a prefetch) hold the old values.
        s.releaseAll();
        s.heldUnit = 0;
        std::vector<float> padded(s.params[param].partition, 0.0f);
        std::memcpy(padded.data(), data, n * sizeof(float));
        s.writePartition(param, padded.data(), false);
        if (!g.master.empty()) std::memcpy(g.master.data() + off, padded.data(), padded.size() * sizeof(float));
        return;
    }
    if (kind != "master" && kind != "exp_avg" && kind != "exp_avg_sq") {
        MIXZ_THROW(InvalidArgument, "cannot write state kind \"", kind, "\" (param, master, exp_avg, exp_avg_sq)");
    }
    if (!trainable) MIXZ_THROW(InvalidArgument, s.params[param].name, " is frozen: it has no ", kind);
    float* target = kind == "master" ? g.master.data() : kind == "exp_avg" ? g.expAvg.data() : g.expAvgSq.data();
    std::memcpy(target + off, data, n * sizeof(float));
}

std::uint64_t Engine::optimizerSteps() const { return state_->steps; }
std::uint64_t Engine::trainingForwards() const { return state_->trainForwards; }
void Engine::setTrainingForwards(std::uint64_t forwards) { state_->trainForwards = forwards; }
void Engine::setOptimizerSteps(std::uint64_t steps) { state_->steps = steps; }

MemoryReport Engine::memory() const {
    const State& s = *state_;
    MemoryReport report;
    for (const Unit& unit : s.units) {
        for (const Group& g : unit.groups) {
            if (g.quantized) {
                report.quantizedPartitions += g.primary.scaleBase;
                report.quantScales += g.primary.scaleCount * sizeof(float);
                if (g.secondaryValid) {
                    report.secondaryPartitions += g.secondary.scaleBase;
                    report.quantScales += g.secondary.scaleCount * sizeof(float);
                }
            } else {
                report.parameterPartitions += g.data.size();
                if (g.secondaryValid) report.secondaryPartitions += g.secondaryData.size();
            }
            report.gradientPartitions += g.grad.size();
            report.masterWeights += g.master.size() * sizeof(float);
            report.optimizerStates += (g.expAvg.size() + g.expAvgSq.size()) * sizeof(float);
        }
    }
    for (const Group& g : s.units[0].groups) report.persistentParameters += g.persistentValues.size() * sizeof(float);
    report.gatheredParameters = s.pool.bytesHeld();
    report.gatheredParametersPeak = s.pool.peakBytes();
    report.activations = s.activationBytes();
    report.activationsPeak = std::max(s.activationsPeak, report.activations);
    report.communicationBuffers = s.staging.size() + s.wire.size() + s.qgzGathered.size() + s.gradWire.size() + s.gradWireOut.size() +
                                  (s.packed.size() + s.reduced.size() + s.reorder.size() + s.nodeReduced.size() + s.dequantized.size()) * sizeof(float);
    return report;
}

EngineMetrics Engine::takeMetrics() {
    std::lock_guard<std::mutex> lock(state_->metricsMutex);
    EngineMetrics metrics = state_->metrics;
    state_->metrics = EngineMetrics{};
    return metrics;
}

void Engine::abort(const std::string& reason) {
    state_->world->abort(reason);
    if (state_->hpz) state_->hpz->abort(reason);
    if (state_->node) state_->node->abort(reason);
    if (state_->cross) state_->cross->abort(reason);
}

} // namespace mixz::zero

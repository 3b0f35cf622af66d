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
#include <mutex>
#include <thread>
#include <utility>

#include "mixz/comm/collectives.h"
#include "mixz/common/error.h"
#include "mixz/common/thread_pool.h"

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

// Full fp32 buffers for gathered parameters and their gradients, all of the largest unit's size,
// kept for reuse: freeing and re-faulting tens of megabytes per layer per step costs more than
// the copies (measured in issue 4's all-gather). Bounded in practice by the prefetch depth.
class BufferPool {
public:
    explicit BufferPool(std::size_t elements) : elements_(std::max<std::size_t>(elements, 1)) {}

    float* take() {
        std::lock_guard<std::mutex> lock(mutex_);
        ++inUse_;
        peakInUse_ = std::max(peakInUse_, inUse_);
        if (!free_.empty()) {
            float* buffer = free_.back();
            free_.pop_back();
            return buffer;
        }
        owned_.push_back(std::make_unique<float[]>(elements_));
        return owned_.back().get();
    }

    void give(float* buffer) {
        if (buffer == nullptr) return;
        std::lock_guard<std::mutex> lock(mutex_);
        --inUse_;
        free_.push_back(buffer);
    }

    std::size_t bytesHeld() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return owned_.size() * elements_ * sizeof(float);
    }
    std::size_t bytesInUse() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return inUse_ * elements_ * sizeof(float);
    }
    std::size_t peakBytes() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return peakInUse_ * elements_ * sizeof(float);
    }

private:
    const std::size_t elements_;
    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<float[]>> owned_;
    std::vector<float*> free_;
    std::size_t inUse_ = 0;
    std::size_t peakInUse_ = 0;
};

enum class Availability { kNotAvailable, kInflight, kAvailable };

struct Unit {
    std::vector<std::size_t> params;  // indices into Engine::State::params
    std::vector<std::size_t> poff;    // each param's offset in the unit's partition
    std::vector<std::size_t> foff;    // each param's offset in the unit's full buffer
    std::size_t partition = 0;        // S: elements of this rank's partition (padded)
    std::size_t full = 0;             // F: elements of the full (unpadded) parameters
    std::vector<std::uint8_t> data;   // S elements, model dtype
    std::vector<std::uint8_t> grad;   // S elements, model dtype
    std::vector<float> master;        // S, only when the model dtype is not fp32
    std::vector<float> expAvg;        // S
    std::vector<float> expAvgSq;      // S
    Availability status = Availability::kNotAvailable;
    std::shared_future<void> fetched;
    float* values = nullptr;          // F elements while available
    std::vector<float> persistentValues; // unit 0 only: its own buffer, never pooled
};

} // namespace

struct Engine::State {
    EngineOptions options;
    std::shared_ptr<comm::Communicator> world;
    int rank = 0;
    int size = 1;
    std::vector<ParamInfo> params;
    std::vector<std::size_t> paramUnit;  // unit of each param
    std::vector<std::size_t> paramIndex; // index within its unit
    std::vector<Unit> units;
    std::unique_ptr<BufferPool> pool;
    std::vector<std::uint8_t> staging;   // N × max S, model dtype (gathers)
    std::vector<float> packed;           // N × chunk (reduce-scatter input)
    std::vector<float> reduced;          // chunk
    std::unique_ptr<CommThread> comm;    // last member: destroyed first, joined before buffers go
    std::vector<std::shared_future<void>> pendingReduces;

    // Activations.
    std::vector<std::vector<float>> hidden;          // L + 1 buffers of micro·seq·hidden
    std::vector<model::DecoderLayerCache<float>> caches;
    model::HeadCache<float> headCache;
    std::vector<float> gradA, gradB;                 // ping-pong d(hidden)
    std::vector<float> persistentGrads;              // unit 0's full gradients during backward
    std::vector<std::int32_t> ids;                   // the training forward's batch, for backward
    int micro = 0;
    int seq = 0;
    bool haveTrainForward = false;
    bool persistentDirty = false;
    std::size_t activationsPeak = 0;

    std::uint64_t steps = 0;
    std::string broken;

    std::mutex metricsMutex;
    EngineMetrics metrics;

    std::size_t layerUnit(int layer) const { return 2 + static_cast<std::size_t>(layer); }
    std::size_t headUnit() const { return 2 + static_cast<std::size_t>(options.dims.layers); }
    std::size_t eb() const { return elementBytes(options.dtype); }

    void addMetric(double EngineMetrics::*field, double seconds) {
        std::lock_guard<std::mutex> lock(metricsMutex);
        metrics.*field += seconds;
    }
    void addBytes(std::uint64_t EngineMetrics::*field, std::uint64_t bytes) {
        std::lock_guard<std::mutex> lock(metricsMutex);
        metrics.*field += bytes;
    }

    void requireUsable() const {
        if (!broken.empty()) MIXZ_THROW(IoError, "the engine stopped after an earlier failure: ", broken);
    }

    // --- building ---------------------------------------------------------------------------

    void addParam(const std::string& name, std::vector<std::int64_t> shape, int unit, bool isNorm) {
        ParamInfo info;
        info.name = name;
        info.numel = 1;
        for (std::int64_t d : shape) info.numel *= static_cast<std::size_t>(d);
        info.shape = std::move(shape);
        info.partition = (info.numel + size - 1) / size;
        info.persistent = info.numel <= options.zero.persistenceThreshold;
        info.unit = info.persistent ? 0 : unit;
        (void)isNorm;
        params.push_back(std::move(info));
    }

    void build() {
        const model::LlamaDims& d = options.dims;
        const std::int64_t h = d.hidden, kv = d.kvDim(), inter = d.intermediate, vocab = d.vocab;
        addParam("model.embed_tokens.weight", {vocab, h}, 1, false);
        for (int i = 0; i < d.layers; ++i) {
            const std::string p = "model.layers." + std::to_string(i) + ".";
            const int u = static_cast<int>(layerUnit(i));
            addParam(p + "self_attn.q_proj.weight", {h, h}, u, false);
            addParam(p + "self_attn.k_proj.weight", {kv, h}, u, false);
            addParam(p + "self_attn.v_proj.weight", {kv, h}, u, false);
            addParam(p + "self_attn.o_proj.weight", {h, h}, u, false);
            addParam(p + "mlp.gate_proj.weight", {inter, h}, u, false);
            addParam(p + "mlp.up_proj.weight", {inter, h}, u, false);
            addParam(p + "mlp.down_proj.weight", {h, inter}, u, false);
            addParam(p + "input_layernorm.weight", {h}, u, true);
            addParam(p + "post_attention_layernorm.weight", {h}, u, true);
        }
        addParam("model.norm.weight", {h}, static_cast<int>(headUnit()), true);
        addParam("lm_head.weight", {vocab, h}, static_cast<int>(headUnit()), false);

        units.resize(headUnit() + 1);
        paramUnit.resize(params.size());
        paramIndex.resize(params.size());
        std::size_t maxFull = 0, maxPartition = 0;
        for (std::size_t i = 0; i < params.size(); ++i) {
            Unit& unit = units[static_cast<std::size_t>(params[i].unit)];
            paramUnit[i] = static_cast<std::size_t>(params[i].unit);
            paramIndex[i] = unit.params.size();
            unit.params.push_back(i);
            unit.poff.push_back(unit.partition);
            unit.foff.push_back(unit.full);
            unit.partition += params[i].partition;
            unit.full += params[i].numel;
        }
        for (std::size_t u = 0; u < units.size(); ++u) {
            Unit& unit = units[u];
            unit.data.assign(unit.partition * eb(), 0);
            unit.grad.assign(unit.partition * eb(), 0);
            if (options.dtype != DType::kFloat32) unit.master.assign(unit.partition, 0.0f);
            unit.expAvg.assign(unit.partition, 0.0f);
            unit.expAvgSq.assign(unit.partition, 0.0f);
            if (u != 0) maxFull = std::max(maxFull, unit.full);
            maxPartition = std::max(maxPartition, unit.partition);
        }
        units[0].persistentValues.assign(units[0].full, 0.0f);
        pool = std::make_unique<BufferPool>(maxFull);
        if (size > 1) staging.assign(static_cast<std::size_t>(size) * maxPartition * eb(), 0);
        initialize();
    }

    // This rank's slice of param i: [begin, begin + length) of the flattened tensor.
    std::size_t sliceBegin(std::size_t i) const {
        return std::min(params[i].numel, static_cast<std::size_t>(rank) * params[i].partition);
    }
    std::size_t sliceLength(std::size_t i) const {
        const std::size_t begin = sliceBegin(i);
        return std::min(params[i].partition, params[i].numel - begin);
    }

    void initialize() {
        std::vector<float> values;
        for (std::size_t i = 0; i < params.size(); ++i) {
            const bool isNorm = params[i].shape.size() == 1;
            const std::size_t begin = sliceBegin(i), length = sliceLength(i);
            values.assign(params[i].partition, 0.0f);
            for (std::size_t j = 0; j < length; ++j) {
                values[j] = isNorm ? 1.0f : normalAt(options.seed, i, begin + j, options.initStd);
            }
            writePartition(i, values.data(), /*setMaster=*/true);
        }
    }

    // Stores fp32 values (the whole partition of param i, padding included) into the model dtype,
    // and the master copy as the rounded value, as DeepSpeed builds its fp32 master from the
    // 16-bit parameters.
    void writePartition(std::size_t i, const float* values, bool setMaster) {
        Unit& unit = units[paramUnit[i]];
        const std::size_t off = unit.poff[paramIndex[i]], n = params[i].partition;
        convertInto(values, DType::kFloat32, unit.data.data() + off * eb(), options.dtype, n);
        if (setMaster && !unit.master.empty()) {
            convertInto(unit.data.data() + off * eb(), options.dtype, unit.master.data() + off, DType::kFloat32, n);
        }
        if (paramUnit[i] == 0) persistentDirty = true;
    }

    // --- gathering -------------------------------------------------------------------------

    // Runs on the communication thread: fills `values` (F elements) with the unit's parameters.
    void gatherInto(std::size_t u, float* values) {
        const auto start = Clock::now();
        Unit& unit = units[u];
        const std::size_t S = unit.partition;
        const std::uint8_t* gathered = unit.data.data();
        std::size_t stride = 0; // elements between ranks' partitions in `gathered`
        if (size > 1 && S > 0) {
            std::uint8_t* mine = staging.data() + static_cast<std::size_t>(rank) * S * eb();
            std::memcpy(mine, unit.data.data(), S * eb());
            comm::AllgatherOptions op(*world);
            op.tag = options.tagBase + 1;
            op.timeout = options.timeout;
            op.input = mine;
            op.inputBytes = S * eb();
            op.output = staging.data();
            op.outputBytes = static_cast<std::size_t>(size) * S * eb();
            comm::allgather(op);
            gathered = staging.data();
            stride = S;
            addBytes(&EngineMetrics::gatheredBytes, static_cast<std::uint64_t>(size - 1) * S * eb());
        }
        for (std::size_t k = 0; k < unit.params.size(); ++k) {
            const ParamInfo& p = params[unit.params[k]];
            for (int r = 0; r < size; ++r) {
                const std::size_t begin = static_cast<std::size_t>(r) * p.partition;
                if (begin >= p.numel) break;
                const std::size_t length = std::min(p.partition, p.numel - begin);
                const std::uint8_t* from = gathered + (static_cast<std::size_t>(r) * stride + unit.poff[k]) * eb();
                convertInto(from, options.dtype, values + unit.foff[k] + begin, DType::kFloat32, length);
            }
        }
        addMetric(&EngineMetrics::gatherSeconds, secondsSince(start));
    }

    std::shared_future<void> submitGather(std::size_t u, float* values) {
        if (!options.zero.overlapComm) {
            // No communication thread work in parallel with compute: gather now, on the comm
            // thread (the only thread that may use the communicator), and wait.
            auto future = comm->submit([this, u, values] { gatherInto(u, values); });
            future.wait();
            return future;
        }
        return comm->submit([this, u, values] { gatherInto(u, values); });
    }

    void fetch(std::size_t u) {
        Unit& unit = units[u];
        if (unit.status != Availability::kNotAvailable) return;
        unit.values = pool->take();
        unit.status = Availability::kInflight;
        unit.fetched = submitGather(u, unit.values);
    }

    std::size_t liveElements() const {
        std::size_t live = 0;
        for (std::size_t u = 1; u < units.size(); ++u) {
            if (units[u].status != Availability::kNotAvailable) live += units[u].full;
        }
        return live;
    }

    // Makes unit u available, then prefetches the units that follow it in `order` within the
    // prefetch budget.
    void ensure(std::size_t u, const std::vector<std::size_t>& order, std::size_t position) {
        fetch(u);
        prefetchAfter(order, position);
        Unit& unit = units[u];
        if (unit.status == Availability::kInflight) {
            const auto start = Clock::now();
            unit.fetched.get(); // rethrows the gather's failure
            addMetric(&EngineMetrics::gatherWaitSeconds, secondsSince(start));
            unit.status = Availability::kAvailable;
        }
    }

    void prefetchAfter(const std::vector<std::size_t>& order, std::size_t position) {
        if (!options.zero.overlapComm || options.zero.prefetchBucketSize == 0) return;
        std::size_t prefetched = 0;
        for (std::size_t k = position + 1; k < order.size(); ++k) {
            const Unit& next = units[order[k]];
            if (next.status != Availability::kNotAvailable) {
                prefetched += next.full;
                continue;
            }
            if (prefetched + next.full > options.zero.prefetchBucketSize) break;
            if (liveElements() + next.full > options.zero.maxLiveParameters) break;
            fetch(order[k]);
            prefetched += next.full;
        }
    }

    void release(std::size_t u) {
        if (u == 0) return;
        Unit& unit = units[u];
        if (unit.status == Availability::kNotAvailable) return;
        if (unit.status == Availability::kInflight) {
            // Its gather still writes into the buffer; never hand it back before that ends.
            try {
                unit.fetched.wait();
            } catch (...) {
            }
        }
        pool->give(unit.values);
        unit.values = nullptr;
        unit.status = Availability::kNotAvailable;
    }

    void releaseAll() {
        for (std::size_t u = 1; u < units.size(); ++u) release(u);
    }

    void gatherPersistent() {
        Unit& unit = units[0];
        float* values = unit.persistentValues.data();
        comm->submit([this, values] { gatherInto(0, values); }).get();
        unit.values = values;
        unit.status = Availability::kAvailable;
        persistentDirty = false;
    }

    const float* valueOf(const std::string& name) const {
        for (std::size_t i = 0; i < params.size(); ++i) {
            if (params[i].name == name) {
                const Unit& unit = units[paramUnit[i]];
                MIXZ_ENFORCE(unit.status == Availability::kAvailable, name, " is not gathered");
                return unit.values + unit.foff[paramIndex[i]];
            }
        }
        MIXZ_ENFORCE(false, "no parameter ", name);
        return nullptr;
    }

    // Parameter i's full fp32 gradient inside `grads` (the buffer of i's unit), or inside the
    // persistent unit's gradient buffer.
    float* gradOf(std::size_t i, float* unitGrads, float* persistentGrads) const {
        const std::size_t u = paramUnit[i];
        float* base = u == 0 ? persistentGrads : unitGrads;
        return base + units[u].foff[paramIndex[i]];
    }

    std::size_t indexOf(const std::string& name) const {
        for (std::size_t i = 0; i < params.size(); ++i) {
            if (params[i].name == name) return i;
        }
        MIXZ_ENFORCE(false, "no parameter ", name);
        return 0;
    }

    model::DecoderLayerParams<float> layerParams(int layer) const {
        const std::string p = "model.layers." + std::to_string(layer) + ".";
        model::DecoderLayerParams<float> lp;
        lp.inputNorm = valueOf(p + "input_layernorm.weight");
        lp.q.weight = valueOf(p + "self_attn.q_proj.weight");
        lp.k.weight = valueOf(p + "self_attn.k_proj.weight");
        lp.v.weight = valueOf(p + "self_attn.v_proj.weight");
        lp.o.weight = valueOf(p + "self_attn.o_proj.weight");
        lp.postNorm = valueOf(p + "post_attention_layernorm.weight");
        lp.gate.weight = valueOf(p + "mlp.gate_proj.weight");
        lp.up.weight = valueOf(p + "mlp.up_proj.weight");
        lp.down.weight = valueOf(p + "mlp.down_proj.weight");
        return lp;
    }

    model::DecoderLayerGrads<float> layerGrads(int layer, float* unitGrads, float* persistentGrads) const {
        const std::string p = "model.layers." + std::to_string(layer) + ".";
        auto g = [&](const char* suffix) { return gradOf(indexOf(p + suffix), unitGrads, persistentGrads); };
        model::DecoderLayerGrads<float> lg;
        lg.inputNorm = g("input_layernorm.weight");
        lg.q.weight = g("self_attn.q_proj.weight");
        lg.k.weight = g("self_attn.k_proj.weight");
        lg.v.weight = g("self_attn.v_proj.weight");
        lg.o.weight = g("self_attn.o_proj.weight");
        lg.postNorm = g("post_attention_layernorm.weight");
        lg.gate.weight = g("mlp.gate_proj.weight");
        lg.up.weight = g("mlp.up_proj.weight");
        lg.down.weight = g("mlp.down_proj.weight");
        return lg;
    }

    // --- gradient reduction ----------------------------------------------------------------

    // Runs on the communication thread: reduce-scatters (mean) the unit's full gradients and adds
    // this rank's slice into the gradient partition, in chunks of the partition of at most
    // reduce_bucket_size / N columns.
    void reduceInto(std::size_t u, const float* grads) {
        const auto start = Clock::now();
        Unit& unit = units[u];
        const std::size_t S = unit.partition;
        const std::size_t N = static_cast<std::size_t>(size);
        const std::size_t chunk =
            std::max<std::size_t>(1, std::min(S, std::max<std::size_t>(1, options.zero.reduceBucketSize / N)));
        if (packed.size() < N * chunk) packed.assign(N * chunk, 0.0f);
        if (reduced.size() < chunk) reduced.assign(chunk, 0.0f);
        for (std::size_t a = 0; a < S; a += chunk) {
            const std::size_t b = std::min(S, a + chunk), width = b - a;
            // Pack member r's columns [a, b) of the partition layout: param k's element
            // r·p_k + (j − poff_k) for column j, zero past the end of the tensor.
            for (std::size_t k = 0; k < unit.params.size(); ++k) {
                const ParamInfo& p = params[unit.params[k]];
                const std::size_t lo = std::max(a, unit.poff[k]), hi = std::min(b, unit.poff[k] + p.partition);
                if (lo >= hi) continue;
                for (std::size_t r = 0; r < N; ++r) {
                    float* dst = packed.data() + r * width + (lo - a);
                    const std::size_t first = r * p.partition + (lo - unit.poff[k]);
                    const std::size_t count = hi - lo;
                    const std::size_t valid = first >= p.numel ? 0 : std::min(count, p.numel - first);
                    if (valid > 0) std::memcpy(dst, grads + unit.foff[k] + first, valid * sizeof(float));
                    if (valid < count) std::fill(dst + valid, dst + count, 0.0f);
                }
            }
            const float* mine = packed.data();
            if (N > 1) {
                comm::ReduceScatterOptions op(*world);
                op.tag = options.tagBase + 2;
                op.timeout = options.timeout;
                op.input = packed.data();
                op.output = reduced.data();
                op.count = width;
                op.dtype = DType::kFloat32;
                op.op = comm::ReduceOp::kMean;
                comm::reduceScatter(op);
                mine = reduced.data();
                addBytes(&EngineMetrics::reducedBytes, static_cast<std::uint64_t>(N) * width * sizeof(float));
            }
            accumulateGrad(unit, a, mine, width);
        }
        addMetric(&EngineMetrics::reduceSeconds, secondsSince(start));
    }

    void accumulateGrad(Unit& unit, std::size_t offset, const float* values, std::size_t count) {
        if (options.dtype == DType::kFloat32) {
            float* grad = reinterpret_cast<float*>(unit.grad.data()) + offset;
            for (std::size_t j = 0; j < count; ++j) grad[j] += values[j];
            return;
        }
        // Accumulate in fp32 and round once to the model dtype, per DeepSpeed's default
        // gradient accumulation dtype (the model dtype).
        std::vector<float> sum(count);
        convertInto(unit.grad.data() + offset * eb(), options.dtype, sum.data(), DType::kFloat32, count);
        for (std::size_t j = 0; j < count; ++j) sum[j] += values[j];
        convertInto(sum.data(), DType::kFloat32, unit.grad.data() + offset * eb(), options.dtype, count);
    }

    void submitReduce(std::size_t u, float* grads, bool pooled) {
        pendingReduces.push_back(comm->submit([this, u, grads, pooled] {
            struct GiveBack {
                BufferPool* pool;
                float* grads;
                bool pooled;
                ~GiveBack() {
                    if (pooled) pool->give(grads);
                }
            } giveBack{pool.get(), grads, pooled};
            reduceInto(u, grads);
        }));
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
        addMetric(&EngineMetrics::reduceWaitSeconds, secondsSince(start));
        if (first) std::rethrow_exception(first);
    }

    // After a failure inside forward/backward: let every queued collective finish or fail, so no
    // task touches a buffer we are about to reuse, and return every gathered buffer.
    void settle() {
        for (auto& future : pendingReduces) {
            try {
                future.wait();
            } catch (...) {
            }
        }
        pendingReduces.clear();
        releaseAll();
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
            throw;
        }
    }

    std::size_t activationBytes() const {
        std::size_t bytes = headCache.bytes();
        for (const auto& cache : caches) bytes += cache.bytes();
        for (const auto& h : hidden) bytes += h.capacity() * sizeof(float);
        bytes += (gradA.capacity() + gradB.capacity() + persistentGrads.capacity()) * sizeof(float);
        return bytes;
    }
};

Engine::Engine(const EngineOptions& options, std::shared_ptr<comm::Communicator> world)
    : state_(std::make_unique<State>()) {
    State& s = *state_;
    model::validate(options.dims);
    if (!world || !world->connected()) MIXZ_THROW(InvalidArgument, "the engine needs a connected communicator");
    if (options.dtype != DType::kFloat32 && options.dtype != DType::kFloat16 && options.dtype != DType::kBFloat16) {
        MIXZ_THROW(InvalidArgument, "the model dtype must be fp32, fp16 or bf16");
    }
    s.options = options;
    s.world = std::move(world);
    s.rank = s.world->rank();
    s.size = s.world->size();
    model::setKernelThreads(std::max(1, options.kernelThreads));
    s.caches.resize(static_cast<std::size_t>(options.dims.layers));
    s.build();
    s.comm = std::make_unique<CommThread>();
    s.gatherPersistent();
}

Engine::~Engine() {
    if (!state_) return;
    // The communication thread must be idle before buffers go: finish what is queued.
    state_->settle();
    state_->comm.reset();
}

const std::vector<ParamInfo>& Engine::params() const { return state_->params; }
int Engine::rank() const { return state_->rank; }
int Engine::worldSize() const { return state_->size; }

ForwardResult Engine::forward(const Batch& batch, bool train) {
    State& s = *state_;
    const model::LlamaDims& d = s.options.dims;
    if (batch.micro <= 0 || batch.seq <= 0) MIXZ_THROW(InvalidArgument, "the batch shape must be positive, got [", batch.micro, ", ", batch.seq, "]");
    if (batch.seq > d.maxSeq) MIXZ_THROW(InvalidArgument, "sequence length ", batch.seq, " exceeds the model's maxSeqLen ", d.maxSeq);
    const std::size_t tokens = static_cast<std::size_t>(batch.micro) * static_cast<std::size_t>(batch.seq);
    for (std::size_t t = 0; t < tokens; ++t) {
        const std::int32_t id = batch.inputIds[t];
        if (id < 0 || id >= d.vocab) {
            MIXZ_THROW(InvalidArgument, "token id ", id, " at position ", t, " is outside the vocabulary [0, ", d.vocab, ")");
        }
    }
    if (train && batch.labels == nullptr) MIXZ_THROW(InvalidArgument, "a training forward needs labels");
    return s.guarded([&]() -> ForwardResult {
        if (!s.pendingReduces.empty()) s.waitReduces();
        if (s.persistentDirty) s.gatherPersistent();
        s.haveTrainForward = false;
        const auto computeStart = Clock::now();
        double waited = 0;
        {
            std::lock_guard<std::mutex> lock(s.metricsMutex);
            waited = s.metrics.gatherWaitSeconds;
        }
        const std::size_t width = tokens * static_cast<std::size_t>(d.hidden);
        s.hidden.resize(static_cast<std::size_t>(d.layers) + 1);
        for (auto& h : s.hidden) h.resize(width);
        std::vector<std::size_t> order;
        order.push_back(1);
        for (int i = 0; i < d.layers; ++i) order.push_back(s.layerUnit(i));
        order.push_back(s.headUnit());

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
            model::HeadParams<float> hp;
            hp.norm = s.valueOf("model.norm.weight");
            hp.lmHead.weight = s.valueOf("lm_head.weight");
            const model::LossResult loss = model::headForward<float>(d, batch.micro, batch.seq, hp,
                                                                      s.hidden.back().data(), batch.labels, -100,
                                                                      train ? &s.headCache : nullptr);
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
        const double waitedNow = s.metrics.gatherWaitSeconds - waited;
        s.metrics.computeSeconds += secondsSince(computeStart) - waitedNow;
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
        // A member, not a local: after a failure, settle() may still wait on its reduction.
        std::vector<float>& persistentGrads = s.persistentGrads;
        persistentGrads.assign(s.units[0].full, 0.0f);
        std::vector<std::size_t> order;
        order.push_back(s.headUnit());
        for (int i = d.layers - 1; i >= 0; --i) order.push_back(s.layerUnit(i));
        order.push_back(1);

        // Head.
        {
            const std::size_t head = s.headUnit();
            s.ensure(head, order, 0);
            float* grads = s.pool->take();
            model::HeadParams<float> hp;
            hp.norm = s.valueOf("model.norm.weight");
            hp.lmHead.weight = s.valueOf("lm_head.weight");
            model::HeadGrads<float> hg;
            hg.norm = s.gradOf(s.indexOf("model.norm.weight"), grads, persistentGrads.data());
            hg.lmHead.weight = s.gradOf(s.indexOf("lm_head.weight"), grads, persistentGrads.data());
            model::headBackward<float>(d, s.micro, s.seq, hp, s.headCache, static_cast<float>(lossGrad), s.gradA.data(), hg);
            s.release(head);
            s.submitReduce(head, grads, true);
        }
        float* dy = s.gradA.data();
        float* dx = s.gradB.data();
        for (int i = d.layers - 1; i >= 0; --i) {
            const std::size_t u = s.layerUnit(i);
            s.ensure(u, order, static_cast<std::size_t>(d.layers - i));
            float* grads = s.pool->take();
            model::decoderLayerBackward<float>(d, s.micro, s.seq, s.layerParams(i), s.caches[static_cast<std::size_t>(i)],
                                               dy, dx, s.layerGrads(i, grads, persistentGrads.data()));
            s.release(u);
            s.submitReduce(u, grads, true);
            std::swap(dx, dy);
        }
        {
            s.ensure(1, order, order.size() - 1);
            float* grads = s.pool->take();
            model::embeddingBackward<float>(d, s.ids.data(), s.ids.size(), dy,
                                            s.gradOf(s.indexOf("model.embed_tokens.weight"), grads, persistentGrads.data()));
            s.release(1);
            s.submitReduce(1, grads, true);
        }
        s.submitReduce(0, persistentGrads.data(), false);
        {
            std::lock_guard<std::mutex> lock(s.metricsMutex);
            s.metrics.computeSeconds += secondsSince(computeStart) - (s.metrics.gatherWaitSeconds - waited);
        }
        s.waitReduces();
        s.haveTrainForward = false;
    });
}

void Engine::zeroGradients() {
    for (Unit& unit : state_->units) std::fill(unit.grad.begin(), unit.grad.end(), 0);
}

StepResult Engine::step(const StepOptions& options) {
    State& s = *state_;
    return s.guarded([&]() -> StepResult {
        if (!s.pendingReduces.empty()) s.waitReduces();
        s.releaseAll();
        s.haveTrainForward = false;
        const auto start = Clock::now();
        StepResult result;
        std::vector<float> grad;
        auto gradOfUnit = [&](const Unit& unit) -> const float* {
            if (s.options.dtype == DType::kFloat32) return reinterpret_cast<const float*>(unit.grad.data());
            grad.resize(unit.partition);
            convertInto(unit.grad.data(), s.options.dtype, grad.data(), DType::kFloat32, unit.partition);
            return grad.data();
        };
        auto allreduce = [&](float value, comm::ReduceOp op) {
            float out = value;
            if (s.size == 1) return out;
            s.comm->submit([&] {
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

        // Squares summed in double per partition, then one all-reduce: also the overflow check
        // (a non-finite gradient makes the sum non-finite on every rank alike).
        double squares = 0;
        for (const Unit& unit : s.units) {
            const float* g = gradOfUnit(unit);
            double local = 0;
            for (std::size_t j = 0; j < unit.partition; ++j) local += static_cast<double>(g[j]) * g[j];
            squares += local;
        }
        const float total = allreduce(static_cast<float>(squares), comm::ReduceOp::kSum);
        const bool finite = std::isfinite(total);
        if (!finite && options.checkOverflow) {
            result.overflow = true;
            result.gradNorm = -1;
            for (Unit& unit : s.units) std::fill(unit.grad.begin(), unit.grad.end(), 0);
            s.addMetric(&EngineMetrics::optimizerSeconds, secondsSince(start));
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
        const double biasCorrection1 = 1.0 - std::pow(o.beta1, t);
        const double biasCorrection2 = 1.0 - std::pow(o.beta2, t);
        const float stepSize = static_cast<float>(options.lr / biasCorrection1);
        const float invSqrtBc2 = static_cast<float>(1.0 / std::sqrt(biasCorrection2));
        const float b1 = static_cast<float>(o.beta1), b2 = static_cast<float>(o.beta2);
        const float eps = static_cast<float>(o.eps);
        const float decay = static_cast<float>(1.0 - options.lr * o.weightDecay);
        const float l2 = static_cast<float>(o.weightDecay);
        const float invCombined = static_cast<float>(1.0 / combined);
        for (std::size_t u = 0; u < s.units.size(); ++u) {
            Unit& unit = s.units[u];
            const float* g = gradOfUnit(unit);
            float* p = unit.master.empty() ? reinterpret_cast<float*>(unit.data.data()) : unit.master.data();
            float* m = unit.expAvg.data();
            float* v = unit.expAvgSq.data();
            const std::size_t n = unit.partition;
            // torch.optim.AdamW / Adam(weight_decay as L2), element-wise, vectorizable.
            for (std::size_t j = 0; j < n; ++j) {
                float gj = g[j] * invCombined;
                if (!o.decoupledWeightDecay) gj += l2 * p[j];
                m[j] = b1 * m[j] + (1.0f - b1) * gj;
                v[j] = b2 * v[j] + (1.0f - b2) * gj * gj;
                const float denom = std::sqrt(v[j]) * invSqrtBc2 + eps;
                float pj = p[j];
                if (o.decoupledWeightDecay) pj *= decay;
                p[j] = pj - stepSize * m[j] / denom;
            }
            if (!unit.master.empty()) convertInto(unit.master.data(), DType::kFloat32, unit.data.data(), s.options.dtype, n);
            std::fill(unit.grad.begin(), unit.grad.end(), 0);
        }
        s.gatherPersistent();
        s.addMetric(&EngineMetrics::optimizerSeconds, secondsSince(start));
        return result;
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

namespace {

const float* floatsOf(const std::vector<float>& values) { return values.data(); }

} // namespace

void Engine::readSlice(std::size_t param, const std::string& kind, float* out) const {
    const State& s = *state_;
    if (param >= s.params.size()) MIXZ_THROW(InvalidArgument, "no parameter with index ", param);
    const Unit& unit = s.units[s.paramUnit[param]];
    const std::size_t off = unit.poff[s.paramIndex[param]];
    const std::size_t n = s.sliceLength(param);
    const bool fp32 = s.options.dtype == DType::kFloat32;
    if (kind == "param" || (kind == "master" && fp32)) {
        convertInto(unit.data.data() + off * s.eb(), s.options.dtype, out, DType::kFloat32, n);
    } else if (kind == "master") {
        std::memcpy(out, floatsOf(unit.master) + off, n * sizeof(float));
    } else if (kind == "exp_avg") {
        std::memcpy(out, floatsOf(unit.expAvg) + off, n * sizeof(float));
    } else if (kind == "exp_avg_sq") {
        std::memcpy(out, floatsOf(unit.expAvgSq) + off, n * sizeof(float));
    } else if (kind == "grad") {
        convertInto(unit.grad.data() + off * s.eb(), s.options.dtype, out, DType::kFloat32, n);
    } else {
        MIXZ_THROW(InvalidArgument, "unknown state kind \"", kind, "\" (param, master, exp_avg, exp_avg_sq, grad)");
    }
}

void Engine::writeSlice(std::size_t param, const std::string& kind, const float* data) {
    State& s = *state_;
    if (param >= s.params.size()) MIXZ_THROW(InvalidArgument, "no parameter with index ", param);
    Unit& unit = s.units[s.paramUnit[param]];
    const std::size_t off = unit.poff[s.paramIndex[param]];
    const std::size_t n = s.sliceLength(param);
    const bool fp32 = s.options.dtype == DType::kFloat32;
    if (kind == "param" || (kind == "master" && fp32)) {
        std::vector<float> padded(s.params[param].partition, 0.0f);
        std::memcpy(padded.data(), data, n * sizeof(float));
        s.writePartition(param, padded.data(), /*setMaster=*/false);
        if (!unit.master.empty()) std::memcpy(unit.master.data() + off, padded.data(), padded.size() * sizeof(float));
    } else if (kind == "master") {
        std::memcpy(unit.master.data() + off, data, n * sizeof(float));
    } else if (kind == "exp_avg") {
        std::memcpy(unit.expAvg.data() + off, data, n * sizeof(float));
    } else if (kind == "exp_avg_sq") {
        std::memcpy(unit.expAvgSq.data() + off, data, n * sizeof(float));
    } else {
        MIXZ_THROW(InvalidArgument, "cannot write state kind \"", kind, "\" (param, master, exp_avg, exp_avg_sq)");
    }
}

std::uint64_t Engine::optimizerSteps() const { return state_->steps; }
void Engine::setOptimizerSteps(std::uint64_t steps) { state_->steps = steps; }

MemoryReport Engine::memory() const {
    const State& s = *state_;
    MemoryReport report;
    for (std::size_t u = 0; u < s.units.size(); ++u) {
        const Unit& unit = s.units[u];
        report.parameterPartitions += unit.data.size();
        report.gradientPartitions += unit.grad.size();
        report.masterWeights += unit.master.size() * sizeof(float);
        report.optimizerStates += (unit.expAvg.size() + unit.expAvgSq.size()) * sizeof(float);
    }
    report.persistentParameters = s.units[0].persistentValues.size() * sizeof(float);
    report.gatheredParameters = s.pool->bytesHeld();
    report.gatheredParametersPeak = s.pool->peakBytes();
    report.activations = s.activationBytes();
    report.activationsPeak = std::max(s.activationsPeak, report.activations);
    report.communicationBuffers = s.staging.size() + (s.packed.size() + s.reduced.size()) * sizeof(float);
    return report;
}

EngineMetrics Engine::takeMetrics() {
    std::lock_guard<std::mutex> lock(state_->metricsMutex);
    EngineMetrics metrics = state_->metrics;
    state_->metrics = EngineMetrics{};
    return metrics;
}

void Engine::abort(const std::string& reason) { state_->world->abort(reason); }

} // namespace mixz::zero

#include "mixz/zero/parameter_store.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "mixz/common/counter_random.h"
#include "mixz/common/error.h"
#include "mixz/quant/block_quant.h"
#include "mixz/zero/element_ops.h"

namespace mixz::zero {

using tensor::DType;

ParameterStore::ParameterStore(const EngineOptions& options, backend::ComputeBackend& backend, int rank, int size, int hpzMembers)
    : options_(options), backend_(backend), rank_(rank), size_(size), hpzMembers_(hpzMembers) {}

const std::uint8_t* ParameterStore::hostRead(const std::uint8_t* at, std::size_t bytes, std::vector<std::uint8_t>& scratch) const {
    if (backend_.hostAddressable()) return at;
    scratch.resize(std::max<std::size_t>(bytes, 1));
    backend_.downloadBytes(scratch.data(), at, bytes);
    return scratch.data();
}

std::uint8_t* ParameterStore::hostWrite(std::uint8_t* at, std::size_t bytes, std::vector<std::uint8_t>& scratch, bool keep) const {
    if (backend_.hostAddressable()) return at;
    scratch.assign(std::max<std::size_t>(bytes, 1), 0);
    if (keep) backend_.downloadBytes(scratch.data(), at, bytes);
    return scratch.data();
}

void ParameterStore::hostCommit(std::uint8_t* at, std::size_t bytes, const std::vector<std::uint8_t>& scratch) const {
    if (!backend_.hostAddressable()) backend_.uploadBytes(at, scratch.data(), bytes);
}

std::size_t ParameterStore::eb() const { return elementBytes(options_.dtype); }

std::size_t ParameterStore::indexOf(const std::string& name) const {
    auto it = byName.find(name);
    MIXZ_ENFORCE(it != byName.end(), "no parameter ", name);
    return it->second;
}

void ParameterStore::addParam(const std::string& name, std::vector<std::int64_t> shape, std::size_t unit, std::size_t group,
                              bool trainable) {
    ParamInfo info;
    info.name = name;
    info.numel = 1;
    for (std::int64_t d : shape) info.numel *= static_cast<std::size_t>(d);
    info.shape = std::move(shape);
    info.partition = partitionSize(info.numel, static_cast<std::size_t>(size_));
    info.persistent = info.numel <= options_.zero.persistenceThreshold;
    // An engine without an optimizer trains nothing: every parameter is frozen, and so is its group.
    info.trainable = trainable && options_.hasOptimizer;
    const std::size_t u = info.persistent ? 0 : unit;
    info.unit = static_cast<int>(u);
    Unit& target = units[u];
    if (target.groups.size() <= group) target.groups.resize(group + 1);
    Group& g = target.groups[group];
    if (!options_.hasOptimizer) g.frozen = true;
    where.push_back({u, group, g.params.size()});
    byName[name] = params.size();
    g.params.push_back(params.size());
    g.foff.push_back(g.full);
    g.full += info.numel;
    params.push_back(std::move(info));
}

std::vector<std::size_t> ParameterStore::numelsOf(const Group& g) const {
    std::vector<std::size_t> numels;
    for (std::size_t i : g.params) numels.push_back(params[i].numel);
    return numels;
}

void ParameterStore::allocate(Group& g) {
    g.primary = makeLayout(numelsOf(g), size_, options_.quantBlockSize);
    g.data.assign(backend_, g.primary.elements * eb());
    if (hpzOn()) g.secondary = makeLayout(numelsOf(g), hpzMembers_, options_.quantBlockSize);
    if (!g.frozen) {
        const std::size_t floats = g.primary.elements * sizeof(float);
        g.grad.assign(backend_, g.primary.elements * eb());
        if (options_.dtype != DType::kFloat32) g.master.assign(backend_, floats);
        g.expAvg.assign(backend_, floats);
        g.expAvgSq.assign(backend_, floats);
    }
}

void ParameterStore::build() {
    const model::LlamaDims& d = options_.dims;
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
        if (d.attentionBias) {
            // Qwen2: biases on q, k and v (none on o or the MLP), trainable as their weights.
            addParam(p + "self_attn.q_proj.bias", {h}, u, 0, true);
            addParam(p + "self_attn.k_proj.bias", {kv}, u, 0, true);
            addParam(p + "self_attn.v_proj.bias", {kv}, u, 0, true);
        }
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
    std::vector<float> values;
    for (std::size_t i = 0; i < params.size(); ++i) {
        // Vectors: norm weights start at 1, biases at 0 (as Hugging Face initializes them).
        const bool isVector = params[i].shape.size() == 1;
        const std::string& name = params[i].name;
        const bool isBias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
        values.assign(params[i].partition, 0.0f);
        const std::size_t begin = sliceBegin(i), length = sliceLength(i);
        for (std::size_t j = 0; j < length; ++j) {
            values[j] = isBias ? 0.0f : isVector ? 1.0f : normalAt(options_.seed, i, begin + j, options_.initStd);
        }
        writePartition(i, values.data(), true);
    }
}

std::size_t ParameterStore::sliceBegin(std::size_t i) const {
    return std::min(params[i].numel, static_cast<std::size_t>(rank_) * params[i].partition);
}

std::size_t ParameterStore::sliceLength(std::size_t i) const {
    const std::size_t begin = sliceBegin(i);
    return std::min(params[i].partition, params[i].numel - begin);
}

void ParameterStore::writePartition(std::size_t i, const float* values, bool setMaster) {
    Group& g = groupOf(i);
    const std::size_t k = where[i].index;
    const std::size_t n = params[i].partition;
    std::vector<std::uint8_t> scratch;
    if (g.quantized) {
        // Codes and scales sit apart in the blob: write it whole (rare: writes after quantization).
        std::uint8_t* blob = hostWrite(g.data.data(), g.data.size(), scratch, true);
        quantizeInto(values, DType::kFloat32, sliceLength(i), n, blob, g.primary, k);
        hostCommit(g.data.data(), g.data.size(), scratch);
    } else {
        const std::size_t off = g.primary.off[k];
        std::uint8_t* at = g.data.data() + off * eb();
        std::uint8_t* host = hostWrite(at, n * eb(), scratch, false);
        convertInto(values, DType::kFloat32, host, options_.dtype, n);
        hostCommit(at, n * eb(), scratch);
        if (setMaster && !g.master.empty()) {
            // The rounded value, converted where the partition is.
            backend_.convert(at, options_.dtype, g.master.floats() + off, DType::kFloat32, n);
        }
    }
    // The secondary was cut from the old values (zeropp.md §8: a write into a primary drops it).
    g.secondaryValid = false;
    if (where[i].unit == 0) {
        g.stale = true;
        persistentDirty = true;
    }
}

void ParameterStore::quantizeInto(const void* input, DType inputType, std::size_t valid, std::size_t part, std::uint8_t* blob,
                                  const Layout& layout, std::size_t k) const {
    quant::QuantizeOptions q;
    q.input = input;
    q.inputType = inputType;
    q.elements = valid;
    q.paddedElements = part; // see makeLayout: the block padding past `part` is implicit
    q.bits = 8;
    q.blockSize = options_.quantBlockSize;
    q.output = blob + layout.qoff[k];
    q.outputBytes = quant::quantizedBytes(q.paddedElements, 8);
    q.scales = reinterpret_cast<float*>(blob + layout.scaleBase) + layout.soff[k];
    q.scaleCount = quant::blockCount(q.paddedElements, options_.quantBlockSize);
    q.threads = 1;
    if (q.paddedElements == 0) return;
    if (!allFinite(input, inputType, valid)) return poisonBlocks(q.output, q.outputBytes, q.scales, q.scaleCount);
    quant::quantize(q);
}

void ParameterStore::dequantizeFrom(const std::uint8_t* blob, const Layout& layout, std::size_t k, std::size_t valid,
                                    float* out) const {
    quant::dequantizeInt8(blob + layout.qoff[k], reinterpret_cast<const float*>(blob + layout.scaleBase) + layout.soff[k], valid,
                          options_.quantBlockSize, out);
}

bool ParameterStore::writesParameter(std::size_t i, const std::string& kind) const {
    const bool fp32 = options_.dtype == DType::kFloat32;
    return kind == "param" || (kind == "master" && fp32 && params[i].trainable);
}

void ParameterStore::readSlice(std::size_t i, const std::string& kind, float* out) const {
    const Group& g = groupOf(i);
    const std::size_t k = where[i].index;
    const std::size_t off = g.primary.off[k];
    const std::size_t n = sliceLength(i);
    std::vector<std::uint8_t> scratch;
    if (writesParameter(i, kind)) {
        if (g.quantized) {
            dequantizeFrom(hostRead(g.data.data(), g.data.size(), scratch), g.primary, k, n, out);
        } else {
            convertInto(hostRead(g.data.data() + off * eb(), n * eb(), scratch), options_.dtype, out, DType::kFloat32, n);
        }
        return;
    }
    if (kind != "master" && kind != "exp_avg" && kind != "exp_avg_sq" && kind != "grad") {
        MIXZ_THROW(InvalidArgument, "unknown state kind \"", kind, "\" (param, master, exp_avg, exp_avg_sq, grad)");
    }
    if (!params[i].trainable) MIXZ_THROW(InvalidArgument, params[i].name, " is frozen: it has no ", kind);
    if (kind == "master") {
        backend_.downloadBytes(out, g.master.floats() + off, n * sizeof(float));
    } else if (kind == "exp_avg") {
        backend_.downloadBytes(out, g.expAvg.floats() + off, n * sizeof(float));
    } else if (kind == "exp_avg_sq") {
        backend_.downloadBytes(out, g.expAvgSq.floats() + off, n * sizeof(float));
    } else {
        convertInto(hostRead(g.grad.data() + off * eb(), n * eb(), scratch), options_.dtype, out, DType::kFloat32, n);
    }
}

void ParameterStore::writeSlice(std::size_t i, const std::string& kind, const float* data) {
    Group& g = groupOf(i);
    const std::size_t off = g.primary.off[where[i].index];
    const std::size_t n = sliceLength(i);
    if (writesParameter(i, kind)) {
        std::vector<float> padded(params[i].partition, 0.0f);
        std::memcpy(padded.data(), data, n * sizeof(float));
        writePartition(i, padded.data(), false);
        if (!g.master.empty()) backend_.uploadBytes(g.master.floats() + off, padded.data(), padded.size() * sizeof(float));
        return;
    }
    if (kind != "master" && kind != "exp_avg" && kind != "exp_avg_sq") {
        MIXZ_THROW(InvalidArgument, "cannot write state kind \"", kind, "\" (param, master, exp_avg, exp_avg_sq)");
    }
    if (!params[i].trainable) MIXZ_THROW(InvalidArgument, params[i].name, " is frozen: it has no ", kind);
    float* target = kind == "master" ? g.master.floats() : kind == "exp_avg" ? g.expAvg.floats() : g.expAvgSq.floats();
    backend_.uploadBytes(target + off, data, n * sizeof(float));
}

void ParameterStore::addPartitionBytes(MemoryReport& report) const {
    for (const Unit& unit : units) {
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
            report.masterWeights += g.master.size();
            report.optimizerStates += g.expAvg.size() + g.expAvgSq.size();
        }
    }
}

} // namespace mixz::zero

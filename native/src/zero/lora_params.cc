#include "mixz/zero/lora_params.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <vector>

#include "mixz/common/counter_random.h"
#include "mixz/common/error.h"
#include "mixz/zero/layer_views.h"

namespace mixz::zero {

void validateLoraOptions(const LoraOptions& options) {
    if (options.rank < 1) MIXZ_THROW(InvalidArgument, "LoRA rank r must be at least 1, got ", options.rank);
    if (!(options.alpha > 0)) MIXZ_THROW(InvalidArgument, "LoRA alpha must be positive, got ", options.alpha);
    if (!(options.dropout >= 0 && options.dropout < 1)) {
        MIXZ_THROW(InvalidArgument, "LoRA dropout must be in [0, 1), got ", options.dropout);
    }
    if (options.targets.empty()) MIXZ_THROW(InvalidArgument, "LoRA needs at least one target module");
    for (const std::string& target : options.targets) {
        if (std::find(std::begin(kLinears), std::end(kLinears), target) == std::end(kLinears)) {
            MIXZ_THROW(InvalidArgument, "unknown LoRA target module \"", target,
                       "\" (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
        }
    }
}

void addLoraAdapters(ParameterStore& s, const model::LlamaDims& d, const LoraOptions& options) {
    // Freeze the base: DeepSpeed keeps no gradient or optimizer state for frozen parameters.
    for (ParamInfo& p : s.params) p.trainable = false;
    for (Unit& unit : s.units) {
        for (Group& g : unit.groups) {
            g.frozen = true;
            g.grad.reset();
            g.master.reset();
            g.expAvg.reset();
            g.expAvgSq.reset();
        }
    }
    // One trainable group per unit for the adapters (group index = the unit's group count now).
    std::vector<std::size_t> loraGroup(s.units.size());
    for (std::size_t u = 0; u < s.units.size(); ++u) loraGroup[u] = s.units[u].groups.size();
    const std::size_t firstNew = s.params.size();
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
    if (s.units[0].groups.size() > loraGroup[0]) s.persistentDirty = true;
}

} // namespace mixz::zero

#include "mixz/zero/layer_views.h"

#include <algorithm>
#include <iterator>

#include "mixz/common/counter_random.h"
#include "mixz/common/error.h"

namespace mixz::zero {

const char* const kLinears[7] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

std::string linearPath(int layer, const std::string& linear) {
    const bool mlp = linear == "gate_proj" || linear == "up_proj" || linear == "down_proj";
    return "model.layers." + std::to_string(layer) + (mlp ? ".mlp." : ".self_attn.") + linear;
}

float* LayerViews::gradOf(std::size_t i, const GradBuffers& grads) const {
    if (!store_.params[i].trainable) return nullptr;
    const ParamLocation& at = store_.where[i];
    float* base = grads[at.unit][at.group];
    MIXZ_ENFORCE(base != nullptr, "no gradient buffer for ", store_.params[i].name);
    return base + store_.groupOf(i).foff[at.index];
}

model::LinearParams<float> LayerViews::linear(int layer, const std::string& name) const {
    const std::string path = linearPath(layer, name);
    model::LinearParams<float> lp;
    lp.weight = fetcher_.valueOf(path + ".weight");
    if (store_.has(path + ".bias")) lp.bias = fetcher_.valueOf(path + ".bias");
    if (store_.has(path + ".lora_A.weight")) {
        lp.loraA = fetcher_.valueOf(path + ".lora_A.weight");
        lp.loraB = fetcher_.valueOf(path + ".lora_B.weight");
        lp.rank = lora_.options.rank;
        lp.loraScale = static_cast<float>(lora_.options.alpha / lora_.options.rank);
        lp.loraDropout = lora_.options.dropout;
        lp.loraDropoutSeed = dropoutSeed(layer, name);
    }
    return lp;
}

// The seed of one linear's LoRA dropout mask in the current training forward: distinct per rank
// (each rank's data differs, as its masks do under PEFT), per training forward, per layer and per
// linear. Only training forwards read it (the kernels keep it in the layer's cache for the
// backward).
std::uint64_t LayerViews::dropoutSeed(int layer, const std::string& name) const {
    const auto linear =
        static_cast<std::uint64_t>(std::find(std::begin(kLinears), std::end(kLinears), name) - std::begin(kLinears));
    std::uint64_t seed = mix(lora_.options.seed ^ 0x4C6F526144726F70ull); // "LoRaDrop"
    for (const std::uint64_t part : {static_cast<std::uint64_t>(store_.rank()), lora_.trainForwards,
                                     static_cast<std::uint64_t>(layer), linear}) {
        seed = mix(seed ^ part);
    }
    return seed;
}

model::LinearGrads<float> LayerViews::linearGrads(int layer, const std::string& name, const GradBuffers& grads) const {
    const std::string path = linearPath(layer, name);
    model::LinearGrads<float> lg;
    lg.weight = gradOf(store_.indexOf(path + ".weight"), grads);
    if (store_.has(path + ".bias")) lg.bias = gradOf(store_.indexOf(path + ".bias"), grads);
    if (store_.has(path + ".lora_A.weight")) {
        lg.loraA = gradOf(store_.indexOf(path + ".lora_A.weight"), grads);
        lg.loraB = gradOf(store_.indexOf(path + ".lora_B.weight"), grads);
    }
    return lg;
}

model::DecoderLayerParams<float> LayerViews::layerParams(int layer) const {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    model::DecoderLayerParams<float> lp;
    lp.inputNorm = fetcher_.valueOf(p + "input_layernorm.weight");
    lp.q = linear(layer, "q_proj");
    lp.k = linear(layer, "k_proj");
    lp.v = linear(layer, "v_proj");
    lp.o = linear(layer, "o_proj");
    lp.postNorm = fetcher_.valueOf(p + "post_attention_layernorm.weight");
    lp.gate = linear(layer, "gate_proj");
    lp.up = linear(layer, "up_proj");
    lp.down = linear(layer, "down_proj");
    return lp;
}

model::DecoderLayerGrads<float> LayerViews::layerGrads(int layer, const GradBuffers& grads) const {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    model::DecoderLayerGrads<float> lg;
    lg.inputNorm = gradOf(store_.indexOf(p + "input_layernorm.weight"), grads);
    lg.q = linearGrads(layer, "q_proj", grads);
    lg.k = linearGrads(layer, "k_proj", grads);
    lg.v = linearGrads(layer, "v_proj", grads);
    lg.o = linearGrads(layer, "o_proj", grads);
    lg.postNorm = gradOf(store_.indexOf(p + "post_attention_layernorm.weight"), grads);
    lg.gate = linearGrads(layer, "gate_proj", grads);
    lg.up = linearGrads(layer, "up_proj", grads);
    lg.down = linearGrads(layer, "down_proj", grads);
    return lg;
}

model::HeadParams<float> LayerViews::headParams() const {
    model::HeadParams<float> hp;
    hp.norm = fetcher_.valueOf("model.norm.weight");
    hp.lmHead.weight = fetcher_.valueOf("lm_head.weight");
    return hp;
}

} // namespace mixz::zero

// The model kernels' view of gathered parameters: DecoderLayerParams / HeadParams pointing into
// the gathered fp32 buffers (with LoRA adapters, their scale and dropout seed where applied), and
// the matching gradient pointers into one backward's gradient buffers. Also the names of the
// decoder's linears, shared with LoRA.
#pragma once

#include <cstdint>
#include <string>

#include "mixz/model/llama.h"
#include "mixz/zero/engine.h"
#include "mixz/zero/fetcher.h"
#include "mixz/zero/gradient_reducer.h"
#include "mixz/zero/parameter_store.h"

namespace mixz::zero {

// q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
extern const char* const kLinears[7];

// "model.layers.<layer>.self_attn.<linear>" or "….mlp.<linear>".
std::string linearPath(int layer, const std::string& linear);

// LoRA as applied to the engine's parameters.
struct LoraState {
    bool applied = false;
    LoraOptions options;
    // Training forwards begun so far: part of each LoRA dropout mask's seed, so every micro-step
    // draws new masks.
    std::uint64_t trainForwards = 0;
};

class LayerViews {
public:
    LayerViews(const ParameterStore& store, const Fetcher& fetcher, const LoraState& lora)
        : store_(store), fetcher_(fetcher), lora_(lora) {}

    model::DecoderLayerParams<float> layerParams(int layer) const;
    model::DecoderLayerGrads<float> layerGrads(int layer, const GradBuffers& grads) const;
    model::HeadParams<float> headParams() const;
    // Where param i's full gradient goes during backward: in its group's gradient buffer, or null
    // for a frozen param.
    float* gradOf(std::size_t i, const GradBuffers& grads) const;
    float* gradOf(const std::string& name, const GradBuffers& grads) const { return gradOf(store_.indexOf(name), grads); }

private:
    model::LinearParams<float> linear(int layer, const std::string& name) const;
    model::LinearGrads<float> linearGrads(int layer, const std::string& name, const GradBuffers& grads) const;
    std::uint64_t dropoutSeed(int layer, const std::string& name) const;

    const ParameterStore& store_;
    const Fetcher& fetcher_;
    const LoraState& lora_;
};

} // namespace mixz::zero

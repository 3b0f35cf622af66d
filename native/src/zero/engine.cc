// The Engine facade, part 1: construction (checking the ZeRO++ decisions the descriptor carries)
// and the training calls (forward, backward, step, applyLora, quantizeNontrainable), orchestrating
// the pieces of mixz::zero (parameter_store, fetcher, secondaries, gradient_reducer, layer_views,
// lora_params, frozen_weights) and the compute backend. The numerics live in those pieces, in
// mixz::optim and in the backend. Part 2 is engine_queries.cc; the state is engine_state.h.
#include "mixz/zero/engine.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <utility>

#include "mixz/common/error.h"
#include "mixz/optim/adamw.h"
#include "mixz/quant/block_quant.h"
#include "mixz/zero/collective_runner.h"
#include "mixz/zero/collective_tags.h"
#include "mixz/zero/element_ops.h"
#include "mixz/zero/fetcher.h"
#include "mixz/zero/frozen_weights.h"
#include "mixz/zero/gradient_reducer.h"
#include "mixz/zero/layer_views.h"
#include "mixz/zero/lora_params.h"
#include "mixz/zero/parameter_store.h"
#include "mixz/zero/secondaries.h"
#include "engine_state.h"

namespace mixz::zero {

using tensor::DType;

namespace {

// The descriptor from TypeScript fills every field and carries the ZeRO++ decisions; the groups
// must match them. TypeScript bugs (a decision and its groups disagreeing) are invariant errors.
void checkOptions(const EngineOptions& options, const std::shared_ptr<comm::Communicator>& world, const Engine::Groups& groups) {
    model::validate(options.dims);
    if (!world || !world->connected()) MIXZ_THROW(InvalidArgument, "the engine needs a connected communicator");
    if (options.dtype != DType::kFloat32 && options.dtype != DType::kFloat16 && options.dtype != DType::kBFloat16) {
        MIXZ_THROW(InvalidArgument, "the model dtype must be fp32, fp16 or bf16");
    }
    if (!quant::isValidBlockSize(options.quantBlockSize)) {
        MIXZ_THROW(InvalidArgument, "quantBlockSize must be a power of two in [8, 65536], got ", options.quantBlockSize);
    }
    if (options.timeout.count() <= 0) MIXZ_THROW(InvalidArgument, "the collective timeout must be positive, got ", options.timeout.count(), " ms");
    if (options.hpzSize < 1) MIXZ_THROW(InvalidArgument, "hpzSize must be at least 1 (1: no hpZ), got ", options.hpzSize);
    const int size = world->size();
    // hpZ: on exactly when the descriptor says hpzSize > 1, with that group.
    MIXZ_ENFORCE((options.hpzSize > 1) == (groups.hpz != nullptr), "hpzSize ", options.hpzSize, " needs ",
                 options.hpzSize > 1 ? "an hpZ group" : "no hpZ group", ", and ", groups.hpz ? "one was" : "none was", " given");
    if (groups.hpz) {
        MIXZ_ENFORCE(groups.hpz->connected() && groups.hpz->kind() == comm::GroupKind::kHpz, "the hpz group must be a connected hpZ group");
        MIXZ_ENFORCE_EQ(groups.hpz->size(), options.hpzSize, "the hpZ group's size must be the descriptor's hpzSize");
        // A group of the whole world holds nothing a primary does not.
        MIXZ_ENFORCE(options.hpzSize < size, "hpzSize ", options.hpzSize, " must be below the world size ", size);
    }
    // qgZ: active exactly when the descriptor says quantizeGradients, with a cross group of more
    // than one node and uniform nodes (the node group, when given, is this node's ranks).
    MIXZ_ENFORCE(options.quantizeGradients == (groups.cross != nullptr), "quantizeGradients ", options.quantizeGradients ? "true" : "false", " needs ",
                 options.quantizeGradients ? "a cross group" : "no cross group", ", and ", groups.cross ? "one was" : "none was", " given");
    MIXZ_ENFORCE(!groups.node || groups.cross, "a node group is only for qgZ (with a cross group)");
    if (groups.cross) {
        const int perNode = groups.node ? groups.node->size() : 1;
        MIXZ_ENFORCE(groups.cross->connected() && (!groups.node || groups.node->connected()), "the qgZ groups must be connected");
        MIXZ_ENFORCE(groups.cross->size() > 1, "qgZ needs more than one node, the cross group has ", groups.cross->size(), " member");
        MIXZ_ENFORCE_EQ(perNode * groups.cross->size(), size, "qgZ needs uniform nodes: ranks per node × nodes = world size");
    }
}

} // namespace

Engine::Engine(const EngineOptions& options, std::shared_ptr<comm::Communicator> world, Groups groups) {
    checkOptions(options, world, groups);
    state_ = std::make_unique<State>(options, std::move(world), std::move(groups));
    State& s = *state_;
    s.store.build();
    s.fetcher.gatherPersistent();
}

Engine::~Engine() {
    if (!state_) return;
    state_->settle();
    // ~State gives every buffer back, then drains and joins the backend's queue.
    state_.reset();
}

const std::vector<ParamInfo>& Engine::params() const {
    // hasSecondary changes with gathers and steps: refresh it for the caller.
    State& s = *state_;
    for (std::size_t i = 0; i < s.store.params.size(); ++i) s.store.params[i].hasSecondary = s.secondaries.usable(s.store.groupOf(i));
    return s.store.params;
}
int Engine::rank() const { return state_->store.rank(); }
int Engine::worldSize() const { return state_->store.size(); }

ForwardResult Engine::forward(const Batch& batch, bool train) {
    State& s = *state_;
    const model::LlamaDims& d = s.options.dims;
    if (batch.micro <= 0 || batch.seq <= 0) MIXZ_THROW(InvalidArgument, "the batch shape must be positive, got [", batch.micro, ", ", batch.seq, "]");
    if (batch.seq > d.maxSeq) MIXZ_THROW(InvalidArgument, "sequence length ", batch.seq, " exceeds the model's maxSeqLen ", d.maxSeq);
    const std::size_t tokens = static_cast<std::size_t>(batch.micro) * static_cast<std::size_t>(batch.seq);
    s.validateIds(batch.inputIds, tokens);
    model::validatePositions(batch.positions, batch.micro, batch.seq);
    if (train && batch.labels == nullptr) MIXZ_THROW(InvalidArgument, "a training forward needs labels");
    return s.guarded([&]() -> ForwardResult {
        s.prepareCompute();
        s.haveTrainForward = false;
        if (train) ++s.lora.trainForwards;
        const auto computeStart = Clock::now();
        const double waited = s.metrics.gatherWaitSeconds();
        const std::size_t width = tokens * static_cast<std::size_t>(d.hidden);
        for (auto& h : s.hidden) h.reserve(width);
        const std::vector<std::size_t> order = s.forwardOrder();

        s.fetcher.ensure(1, order, 0);
        s.backend->embeddingForward(d, batch.inputIds, tokens, s.fetcher.valueOf("model.embed_tokens.weight"), s.hidden[0].data());
        s.fetcher.release(1);
        for (int i = 0; i < d.layers; ++i) {
            const std::size_t u = s.store.layerUnit(i);
            const std::size_t at = static_cast<std::size_t>(i);
            s.fetcher.ensure(u, order, at + 1);
            s.backend->decoderLayerForward(d, batch.micro, batch.seq, s.views.layerParams(i), s.hidden[at].data(), s.hidden[at + 1].data(),
                                           train ? s.caches[at].get() : nullptr, batch.positions);
            s.fetcher.release(u);
        }
        ForwardResult result;
        const std::size_t head = s.store.headUnit();
        s.fetcher.ensure(head, order, order.size() - 1);
        if (batch.labels != nullptr) {
            const model::LossResult loss = s.backend->headForward(d, batch.micro, batch.seq, s.views.headParams(), s.hidden.back().data(),
                                                                  batch.labels, -100, train ? s.headCache.get() : nullptr);
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
            s.fetcher.release(head);
        }
        s.metrics.addCompute(computeStart, waited);
        s.activationsPeak = std::max(s.activationsPeak, s.activationBytes());
        return result;
    });
}

void Engine::backward(double lossGrad) {
    State& s = *state_;
    if (!s.options.hasOptimizer) MIXZ_THROW(InvalidArgument, "backward() on an engine without an optimizer: every parameter is frozen");
    if (!s.haveTrainForward) MIXZ_THROW(InvalidArgument, "backward() needs a training forward() first (each forward is used by one backward)");
    s.guarded([&] {
        const model::LlamaDims& d = s.options.dims;
        const auto computeStart = Clock::now();
        const double waited = s.metrics.gatherWaitSeconds();
        const std::size_t width = static_cast<std::size_t>(s.micro) * static_cast<std::size_t>(s.seq) * static_cast<std::size_t>(d.hidden);
        s.gradA.reserve(width);
        s.gradB.reserve(width);
        std::vector<Unit>& units = s.store.units;
        // Gradient buffers per unit and group; the persistent unit's are members (a failure's
        // settle() may still wait on their reductions after this frame is gone).
        GradBuffers& grads = s.backwardGrads;
        grads.assign(units.size(), {});
        while (s.persistentGrads.size() < units[0].groups.size()) s.persistentGrads.emplace_back(*s.backend);
        grads[0].assign(units[0].groups.size(), nullptr);
        for (std::size_t gi = 0; gi < units[0].groups.size(); ++gi) {
            if (units[0].groups[gi].frozen) continue;
            const std::size_t full = units[0].groups[gi].full;
            grads[0][gi] = s.persistentGrads[gi].reserve(full);
            s.backend->zero(grads[0][gi], full);
        }
        const bool embeddingTrainable = s.store.params[s.store.indexOf("model.embed_tokens.weight")].trainable;
        std::vector<std::size_t> order{s.store.headUnit()};
        for (int i = d.layers - 1; i >= 0; --i) order.push_back(s.store.layerUnit(i));
        // A frozen embedding has no backward: do not prefetch it.
        if (embeddingTrainable) order.push_back(1);

        {
            const std::size_t head = s.store.headUnit();
            s.fetcher.ensure(head, order, 0);
            s.reducer.takeGrads(head, grads);
            model::HeadGrads<float> hg;
            hg.norm = s.views.gradOf("model.norm.weight", grads);
            hg.lmHead.weight = s.views.gradOf("lm_head.weight", grads);
            s.backend->headBackward(d, s.micro, s.seq, s.views.headParams(), *s.headCache, static_cast<float>(lossGrad), s.gradA.data(), hg);
            s.fetcher.release(head);
            s.reducer.submitReduces(head, grads);
        }
        float* dy = s.gradA.data();
        float* dx = s.gradB.data();
        for (int i = d.layers - 1; i >= 0; --i) {
            const std::size_t u = s.store.layerUnit(i);
            s.fetcher.ensure(u, order, static_cast<std::size_t>(d.layers - i));
            s.reducer.takeGrads(u, grads);
            // The first layer's input gradient is only needed to train the embedding.
            float* input = (i == 0 && !embeddingTrainable) ? nullptr : dx;
            s.backend->decoderLayerBackward(d, s.micro, s.seq, s.views.layerParams(i), *s.caches[static_cast<std::size_t>(i)], dy, input,
                                            s.views.layerGrads(i, grads));
            s.fetcher.release(u);
            s.reducer.submitReduces(u, grads);
            std::swap(dx, dy);
        }
        if (embeddingTrainable) {
            s.fetcher.ensure(1, order, order.size() - 1);
            s.reducer.takeGrads(1, grads);
            s.backend->embeddingBackward(d, s.ids.data(), s.ids.size(), dy, s.views.gradOf("model.embed_tokens.weight", grads));
            s.fetcher.release(1);
            s.reducer.submitReduces(1, grads);
        }
        for (std::size_t gi = 0; gi < units[0].groups.size(); ++gi) {
            if (grads[0][gi] != nullptr) s.reducer.submitReduce(0, gi, grads[0][gi], false);
        }
        s.metrics.addCompute(computeStart, waited);
        s.reducer.waitReduces();
        s.haveTrainForward = false;
    });
}

void Engine::zeroGradients() {
    State& s = *state_;
    for (Unit& unit : s.store.units) {
        for (Group& g : unit.groups) s.backend->zeroBytes(g.grad.data(), g.grad.size());
    }
}

StepResult Engine::step(const StepOptions& options) {
    State& s = *state_;
    if (!s.options.hasOptimizer) MIXZ_THROW(InvalidArgument, "step() on an engine without an optimizer");
    return s.guarded([&]() -> StepResult {
        if (s.reducer.pending()) s.reducer.waitReduces();
        s.fetcher.releaseAll();
        s.haveTrainForward = false;
        const auto start = Clock::now();
        StepResult result;
        // The arithmetic runs where the state lives (the backend's partition arithmetic).
        backend::ComputeBackend& b = *s.backend;
        backend::Buffer scratch(b);
        auto gradOfGroup = [&](const Group& g) -> const float* {
            if (s.options.dtype == DType::kFloat32) return g.grad.floats();
            float* fp32 = scratch.reserve(g.primary.elements);
            b.convert(g.grad.data(), s.options.dtype, fp32, DType::kFloat32, g.primary.elements);
            return fp32;
        };
        auto forTrainable = [&](auto&& fn) {
            for (Unit& unit : s.store.units) {
                for (Group& g : unit.groups) {
                    if (!g.frozen) fn(g);
                }
            }
        };

        // Squares summed in double per partition, then one all-reduce: also the overflow check
        // (a non-finite gradient makes the sum non-finite on every rank alike).
        double squares = 0;
        forTrainable([&](Group& g) { squares += b.sumOfSquares(gradOfGroup(g), g.primary.elements); });
        const float total = s.runner.allreduce(*s.world, tags::kGradNormAllreduce, static_cast<float>(squares), comm::ReduceOp::kSum);
        const optim::GradientScaling scaling = optim::gradientScaling(total, options.lossScale, options.gradientClipping);
        if (!scaling.finite && options.checkOverflow) {
            result.overflow = true;
            result.gradNorm = -1;
            forTrainable([&](Group& g) { b.zeroBytes(g.grad.data(), g.grad.size()); });
            s.metrics.add(&EngineMetrics::optimizerSeconds, secondsSince(start));
            return result;
        }
        result.gradNorm = scaling.gradNorm;
        ++s.steps;
        const optim::AdamStepCoefficients c = optim::adamCoefficients(s.options.optimizer, options.lr, s.steps, scaling.combined);
        forTrainable([&](Group& g) {
            const float* grad = gradOfGroup(g);
            float* p = g.master.empty() ? g.data.floats() : g.master.floats();
            const std::size_t n = g.primary.elements;
            b.adamUpdate(c, grad, p, g.expAvg.floats(), g.expAvgSq.floats(), n);
            if (!g.master.empty()) b.convert(g.master.data(), DType::kFloat32, g.data.data(), s.options.dtype, n);
            b.zeroBytes(g.grad.data(), g.grad.size());
            // zeropp.md §2.4 step 5: trainable secondaries hold the old values.
            g.secondaryValid = false;
            g.stale = true;
        });
        s.fetcher.gatherPersistent();
        s.metrics.add(&EngineMetrics::optimizerSeconds, secondsSince(start));
        return result;
    });
}

void Engine::applyLora(const LoraOptions& options) {
    State& s = *state_;
    s.requireUsable();
    if (s.lora.applied) MIXZ_THROW(InvalidArgument, "LoRA is already applied to this model");
    validateLoraOptions(options);
    if (s.haveTrainForward || s.reducer.pending()) MIXZ_THROW(InvalidArgument, "apply LoRA between steps, not between forward and backward");
    s.fetcher.releaseAll();
    addLoraAdapters(s.store, s.options.dims, options);
    s.lora.applied = true;
    s.lora.options = options;
}

QuantizeReport Engine::quantizeNontrainable() {
    State& s = *state_;
    return s.guarded([&]() -> QuantizeReport {
        if (s.haveTrainForward || s.reducer.pending()) MIXZ_THROW(InvalidArgument, "quantize between steps, not between forward and backward");
        s.fetcher.releaseAll();
        return quantizeFrozen(s.store, s.fetcher, s.secondaries, s.runner);
    });
}

} // namespace mixz::zero

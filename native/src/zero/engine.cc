// The Engine facade: construction (checking the ZeRO++ decisions the descriptor carries) and the
// orchestration of forward, backward, step, generate and the slice accessors over the pieces of
// mixz::zero (parameter_store, fetcher, secondaries, gradient_reducer, layer_views, lora_params)
// and the compute backend. The numerics live in those pieces, in mixz::optim and in the backend.
#include "mixz/zero/engine.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <utility>

#include "mixz/backend/cpu_backend.h"
#include "mixz/common/error.h"
#include "mixz/model/sampling.h"
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

namespace mixz::zero {

using tensor::DType;

struct Engine::State {
    // Declaration order is construction order: each piece refers to the ones above it.
    EngineOptions options;
    std::shared_ptr<comm::Communicator> world;
    std::shared_ptr<comm::Communicator> hpz;   // null without hpZ
    std::shared_ptr<comm::Communicator> node;  // qgZ: this node's ranks (null: one rank per node)
    std::shared_ptr<comm::Communicator> cross; // qgZ: this local rank of every node (null: no qgZ)
    // Kernels, compute buffers and the communication queue. The device choice goes here: today
    // always the CPU backend; a CUDA backend (a later issue) will be picked from the options.
    std::unique_ptr<backend::ComputeBackend> backend;
    MetricsRecorder metrics;
    CollectiveRunner runner;
    ParameterStore store;
    Secondaries secondaries;
    Fetcher fetcher;
    GradientReducer reducer;
    LoraState lora;
    LayerViews views;

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
    std::size_t activationsPeak = 0;

    std::uint64_t steps = 0;
    std::string broken;
    std::size_t heldUnit = 0; // gatherParameter keeps its unit gathered for the next index (0: none)
    GradBuffers backwardGrads; // backend gradient buffers not yet handed to a reduction

    State(const EngineOptions& o, std::shared_ptr<comm::Communicator> w, Groups groups)
        : options(o),
          world(std::move(w)),
          hpz(std::move(groups.hpz)),
          node(std::move(groups.node)),
          cross(std::move(groups.cross)),
          backend(backend::makeCpuBackend(options.kernelThreads)),
          runner(backend->communicationQueue(), options.timeout),
          store(options, world->rank(), world->size(), options.hpzSize),
          secondaries(store, hpz),
          fetcher(options, store, secondaries, *backend, runner, metrics, *world),
          reducer(options, store, *backend, runner, metrics, *world, node.get(), cross.get()),
          views(store, fetcher, lora) {}

    // The communication queue is drained and joined before anything its tasks touch goes.
    ~State() { backend.reset(); }

    void requireUsable() const {
        if (!broken.empty()) MIXZ_THROW(IoError, "the engine stopped after an earlier failure: ", broken);
    }

    // After a failure: let every queued collective finish or fail, so no task touches a buffer we
    // are about to reuse, and return every gathered buffer.
    void settle() {
        reducer.settle();
        for (std::size_t u = 1; u < backwardGrads.size(); ++u) {
            for (float*& buffer : backwardGrads[u]) {
                backend->giveBuffer(buffer);
                buffer = nullptr;
            }
        }
        fetcher.releaseAll();
        heldUnit = 0;
        haveTrainForward = false;
    }

    // Every call that runs collectives goes through here: a failed collective leaves this rank
    // out of step with its peers, so the engine is broken from then on.
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
            const std::string failure = runner.failure();
            if (!failure.empty()) broken = failure;
            throw;
        }
    }

    // Pending reductions done and the persistent unit current: what every compute call needs.
    void prepareCompute() {
        if (reducer.pending()) reducer.waitReduces();
        if (store.persistentDirty) fetcher.gatherPersistent();
    }

    std::size_t activationBytes() const {
        std::size_t bytes = headCache.bytes();
        for (const auto& cache : caches) bytes += cache.bytes();
        for (const auto& h : hidden) bytes += h.capacity() * sizeof(float);
        bytes += (gradA.capacity() + gradB.capacity()) * sizeof(float);
        for (const auto& g : persistentGrads) bytes += g.capacity() * sizeof(float);
        return bytes;
    }

    void validateIds(const std::int32_t* tokens, std::size_t count) const {
        for (std::size_t t = 0; t < count; ++t) {
            if (tokens[t] < 0 || tokens[t] >= options.dims.vocab) {
                MIXZ_THROW(InvalidArgument, "token id ", tokens[t], " at position ", t, " is outside the vocabulary [0, ", options.dims.vocab, ")");
            }
        }
    }

    std::vector<std::size_t> forwardOrder() const {
        std::vector<std::size_t> order{1};
        for (int i = 0; i < options.dims.layers; ++i) order.push_back(store.layerUnit(i));
        order.push_back(store.headUnit());
        return order;
    }
};

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
    s.caches.resize(static_cast<std::size_t>(options.dims.layers));
    s.store.build();
    s.fetcher.gatherPersistent();
}

Engine::~Engine() {
    if (!state_) return;
    state_->settle();
    state_->backend.reset();
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
    if (train && batch.labels == nullptr) MIXZ_THROW(InvalidArgument, "a training forward needs labels");
    return s.guarded([&]() -> ForwardResult {
        s.prepareCompute();
        s.haveTrainForward = false;
        if (train) ++s.lora.trainForwards;
        const auto computeStart = Clock::now();
        const double waited = s.metrics.gatherWaitSeconds();
        const std::size_t width = tokens * static_cast<std::size_t>(d.hidden);
        s.hidden.resize(static_cast<std::size_t>(d.layers) + 1);
        for (auto& h : s.hidden) h.resize(width);
        const std::vector<std::size_t> order = s.forwardOrder();

        s.fetcher.ensure(1, order, 0);
        s.backend->embeddingForward(d, batch.inputIds, tokens, s.fetcher.valueOf("model.embed_tokens.weight"), s.hidden[0].data());
        s.fetcher.release(1);
        for (int i = 0; i < d.layers; ++i) {
            const std::size_t u = s.store.layerUnit(i);
            const std::size_t at = static_cast<std::size_t>(i);
            s.fetcher.ensure(u, order, at + 1);
            s.backend->decoderLayerForward(d, batch.micro, batch.seq, s.views.layerParams(i), s.hidden[at].data(), s.hidden[at + 1].data(),
                                           train ? &s.caches[at] : nullptr);
            s.fetcher.release(u);
        }
        ForwardResult result;
        const std::size_t head = s.store.headUnit();
        s.fetcher.ensure(head, order, order.size() - 1);
        if (batch.labels != nullptr) {
            const model::LossResult loss = s.backend->headForward(d, batch.micro, batch.seq, s.views.headParams(), s.hidden.back().data(),
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
            s.fetcher.release(head);
        }
        s.metrics.addCompute(computeStart, waited);
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
        const double waited = s.metrics.gatherWaitSeconds();
        const std::size_t width = static_cast<std::size_t>(s.micro) * static_cast<std::size_t>(s.seq) * static_cast<std::size_t>(d.hidden);
        s.gradA.resize(width);
        s.gradB.resize(width);
        std::vector<Unit>& units = s.store.units;
        // Gradient buffers per unit and group; the persistent unit's are members (a failure's
        // settle() may still wait on their reductions after this frame is gone).
        GradBuffers& grads = s.backwardGrads;
        grads.assign(units.size(), {});
        s.persistentGrads.resize(units[0].groups.size());
        grads[0].assign(units[0].groups.size(), nullptr);
        for (std::size_t gi = 0; gi < units[0].groups.size(); ++gi) {
            if (units[0].groups[gi].frozen) continue;
            s.persistentGrads[gi].assign(units[0].groups[gi].full, 0.0f);
            grads[0][gi] = s.persistentGrads[gi].data();
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
            s.backend->headBackward(d, s.micro, s.seq, s.views.headParams(), s.headCache, static_cast<float>(lossGrad), s.gradA.data(), hg);
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
            s.backend->decoderLayerBackward(d, s.micro, s.seq, s.views.layerParams(i), s.caches[static_cast<std::size_t>(i)], dy, input,
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
    for (Unit& unit : state_->store.units) {
        for (Group& g : unit.groups) std::fill(g.grad.begin(), g.grad.end(), 0);
    }
}

StepResult Engine::step(const StepOptions& options) {
    State& s = *state_;
    return s.guarded([&]() -> StepResult {
        if (s.reducer.pending()) s.reducer.waitReduces();
        s.fetcher.releaseAll();
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
        forTrainable([&](Group& g) { squares += optim::sumOfSquares(gradOfGroup(g), g.primary.elements); });
        const float total = s.runner.allreduce(*s.world, tags::kGradNormAllreduce, static_cast<float>(squares), comm::ReduceOp::kSum);
        const optim::GradientScaling scaling = optim::gradientScaling(total, options.lossScale, options.gradientClipping);
        if (!scaling.finite && options.checkOverflow) {
            result.overflow = true;
            result.gradNorm = -1;
            forTrainable([&](Group& g) { std::fill(g.grad.begin(), g.grad.end(), 0); });
            s.metrics.add(&EngineMetrics::optimizerSeconds, secondsSince(start));
            return result;
        }
        result.gradNorm = scaling.gradNorm;
        ++s.steps;
        const optim::AdamStepCoefficients c = optim::adamCoefficients(s.options.optimizer, options.lr, s.steps, scaling.combined);
        forTrainable([&](Group& g) {
            const float* grad = gradOfGroup(g);
            float* p = g.master.empty() ? reinterpret_cast<float*>(g.data.data()) : g.master.data();
            const std::size_t n = g.primary.elements;
            optim::adamUpdate(c, grad, p, g.expAvg.data(), g.expAvgSq.data(), n);
            if (!g.master.empty()) convertInto(g.master.data(), DType::kFloat32, g.data.data(), s.options.dtype, n);
            std::fill(g.grad.begin(), g.grad.end(), 0);
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
        return quantizeFrozen(s.store, s.fetcher, s.secondaries, s.runner, *s.backend);
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
        s.prepareCompute();
        std::vector<model::KvCache<float>> kv;
        for (int i = 0; i < d.layers; ++i) kv.emplace_back(d, options.batch);
        const std::size_t newTokens = static_cast<std::size_t>(options.maxNewTokens);
        std::vector<std::int32_t> out(batch * newTokens);
        std::vector<std::int32_t> tokens(prompt, prompt + batch * static_cast<std::size_t>(options.promptLength));
        const std::vector<std::size_t> order = s.forwardOrder();
        const std::size_t H = static_cast<std::size_t>(d.hidden), V = static_cast<std::size_t>(d.vocab);
        std::vector<float> x, y, last(batch * H), logits(batch * V);
        std::vector<std::pair<float, int>> ranked(V);
        const model::SamplingOptions sampling{options.temperature, options.topK, options.seed};
        int seq = options.promptLength;
        for (int step = 0; step < options.maxNewTokens; ++step) {
            const std::size_t rows = batch * static_cast<std::size_t>(seq);
            x.resize(rows * H);
            y.resize(rows * H);
            s.fetcher.ensure(1, order, 0);
            s.backend->embeddingForward(d, tokens.data(), rows, s.fetcher.valueOf("model.embed_tokens.weight"), x.data());
            s.fetcher.release(1);
            for (int i = 0; i < d.layers; ++i) {
                const std::size_t u = s.store.layerUnit(i);
                s.fetcher.ensure(u, order, static_cast<std::size_t>(i) + 1);
                s.backend->decoderLayerForwardCached(d, seq, s.views.layerParams(i), x.data(), y.data(), kv[static_cast<std::size_t>(i)]);
                s.fetcher.release(u);
                std::swap(x, y);
            }
            for (std::size_t b = 0; b < batch; ++b) {
                std::memcpy(last.data() + b * H, x.data() + (b * static_cast<std::size_t>(seq) + static_cast<std::size_t>(seq) - 1) * H, H * sizeof(float));
            }
            s.fetcher.ensure(s.store.headUnit(), order, order.size() - 1);
            s.backend->headLogits(d, batch, s.views.headParams(), last.data(), logits.data());
            s.fetcher.release(s.store.headUnit());
            tokens.assign(batch, 0);
            for (std::size_t b = 0; b < batch; ++b) {
                const int chosen = model::sampleToken(logits.data() + b * V, V, sampling, b, step, ranked);
                out[b * newTokens + static_cast<std::size_t>(step)] = chosen;
                tokens[b] = chosen;
            }
            seq = 1;
        }
        return out;
    });
}

std::vector<float> Engine::gatherParameter(std::size_t index) {
    State& s = *state_;
    if (index >= s.store.params.size()) MIXZ_THROW(InvalidArgument, "no parameter with index ", index);
    if (s.haveTrainForward) MIXZ_THROW(InvalidArgument, "gatherParameter() between forward() and backward()");
    return s.guarded([&]() -> std::vector<float> {
        s.prepareCompute();
        const std::size_t u = s.store.where[index].unit;
        // Consecutive parameters of one unit (an export walks them in order) share one gather.
        if (s.heldUnit != u) s.fetcher.release(s.heldUnit);
        s.fetcher.ensure(u, {u}, 0);
        s.heldUnit = u;
        const float* values = s.fetcher.valueOf(index);
        return std::vector<float>(values, values + s.store.params[index].numel);
    });
}

std::size_t Engine::sliceBegin(std::size_t param) const {
    MIXZ_ENFORCE(param < state_->store.params.size(), "parameter index ", param);
    return state_->store.sliceBegin(param);
}

std::size_t Engine::sliceLength(std::size_t param) const {
    MIXZ_ENFORCE(param < state_->store.params.size(), "parameter index ", param);
    return state_->store.sliceLength(param);
}

void Engine::readSlice(std::size_t param, const std::string& kind, float* out) const {
    const State& s = *state_;
    if (param >= s.store.params.size()) MIXZ_THROW(InvalidArgument, "no parameter with index ", param);
    s.store.readSlice(param, kind, out);
}

void Engine::writeSlice(std::size_t param, const std::string& kind, const float* data) {
    State& s = *state_;
    if (param >= s.store.params.size()) MIXZ_THROW(InvalidArgument, "no parameter with index ", param);
    if (s.store.writesParameter(param, kind)) {
        // Gathered copies (a unit kept from a forward, a prefetch) hold the old values.
        s.fetcher.releaseAll();
        s.heldUnit = 0;
    }
    s.store.writeSlice(param, kind, data);
}

std::uint64_t Engine::optimizerSteps() const { return state_->steps; }
std::uint64_t Engine::trainingForwards() const { return state_->lora.trainForwards; }
void Engine::setTrainingForwards(std::uint64_t forwards) { state_->lora.trainForwards = forwards; }
void Engine::setOptimizerSteps(std::uint64_t steps) { state_->steps = steps; }

MemoryReport Engine::memory() const {
    const State& s = *state_;
    MemoryReport report;
    s.store.addPartitionBytes(report);
    for (const Group& g : s.store.units[0].groups) report.persistentParameters += g.persistentValues.size() * sizeof(float);
    report.gatheredParameters = s.backend->bufferBytesHeld();
    report.gatheredParametersPeak = s.backend->bufferBytesPeak();
    report.activations = s.activationBytes();
    report.activationsPeak = std::max(s.activationsPeak, report.activations);
    report.communicationBuffers = s.fetcher.bufferBytes() + s.reducer.bufferBytes();
    return report;
}

EngineMetrics Engine::takeMetrics() { return state_->metrics.take(); }

void Engine::abort(const std::string& reason) {
    state_->world->abort(reason);
    if (state_->hpz) state_->hpz->abort(reason);
    if (state_->node) state_->node->abort(reason);
    if (state_->cross) state_->cross->abort(reason);
}

} // namespace mixz::zero

// The Engine facade, part 2: generation, whole-parameter and slice access, step counters, memory
// and metrics reports, abort (part 1, construction and training, is engine.cc).
#include "mixz/zero/engine.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "mixz/model/sampling.h"
#include "engine_state.h"

namespace mixz::zero {

std::vector<std::int32_t> Engine::generate(const std::int32_t* prompt, const GenerateOptions& options) {
    State& s = *state_;
    const model::LlamaDims& d = s.options.dims;
    if (options.batch < 1 || options.promptLength < 1 || options.maxNewTokens < 1) {
        MIXZ_THROW(InvalidArgument, "generate needs batch, prompt length and maxNewTokens ≥ 1");
    }
    if (options.promptLength + options.maxNewTokens > d.maxSeq) {
        MIXZ_THROW(InvalidArgument, "prompt length ", options.promptLength, " + maxNewTokens ", options.maxNewTokens, " exceeds the model's maxSeqLen ", d.maxSeq);
    }
    if (!(options.topP > 0 && options.topP <= 1)) MIXZ_THROW(InvalidArgument, "topP must be in (0, 1], got ", options.topP);
    const std::size_t batch = static_cast<std::size_t>(options.batch);
    s.validateIds(prompt, batch * static_cast<std::size_t>(options.promptLength));
    s.validateIds(&options.padId, 1);
    if (!options.stopIds.empty()) s.validateIds(options.stopIds.data(), options.stopIds.size());
    if (s.haveTrainForward) MIXZ_THROW(InvalidArgument, "generate() between forward() and backward() would discard the activations backward needs");
    return s.guarded([&]() -> std::vector<std::int32_t> {
        s.prepareCompute();
        std::vector<std::unique_ptr<backend::KvCache>> kv;
        for (int i = 0; i < d.layers; ++i) kv.push_back(s.backend->makeKvCache(d, options.batch));
        const std::size_t newTokens = static_cast<std::size_t>(options.maxNewTokens);
        std::vector<std::int32_t> out(batch * newTokens);
        std::vector<std::int32_t> tokens(prompt, prompt + batch * static_cast<std::size_t>(options.promptLength));
        const std::vector<std::size_t> order = s.forwardOrder();
        const std::size_t H = static_cast<std::size_t>(d.hidden), V = static_cast<std::size_t>(d.vocab);
        backend::Buffer x(*s.backend), y(*s.backend), last(*s.backend);
        last.reserve(batch * H);
        std::vector<float> logits(batch * V);
        std::vector<std::pair<float, int>> ranked(V);
        const model::SamplingOptions sampling{options.temperature, options.topK, options.topP, options.seed};
        // Finished sequences (a stop id produced): their remaining positions are padding.
        std::vector<char> done(batch, 0);
        std::size_t finished = 0;
        for (std::int32_t& id : out) id = options.padId;
        int seq = options.promptLength;
        for (int step = 0; step < options.maxNewTokens; ++step) {
            const std::size_t rows = batch * static_cast<std::size_t>(seq);
            // The prompt's rows first, then one row per step: reserve keeps the larger buffers.
            x.reserve(rows * H);
            y.reserve(rows * H);
            s.fetcher.ensure(1, order, 0);
            s.backend->embeddingForward(d, tokens.data(), rows, s.fetcher.valueOf("model.embed_tokens.weight"), x.data());
            s.fetcher.release(1);
            for (int i = 0; i < d.layers; ++i) {
                const std::size_t u = s.store.layerUnit(i);
                s.fetcher.ensure(u, order, static_cast<std::size_t>(i) + 1);
                s.backend->decoderLayerForwardCached(d, seq, s.views.layerParams(i), x.data(), y.data(), *kv[static_cast<std::size_t>(i)]);
                s.fetcher.release(u);
                std::swap(x, y);
            }
            for (std::size_t b = 0; b < batch; ++b) {
                s.backend->copy(last.data() + b * H, x.data() + (b * static_cast<std::size_t>(seq) + static_cast<std::size_t>(seq) - 1) * H, H);
            }
            s.fetcher.ensure(s.store.headUnit(), order, order.size() - 1);
            s.backend->headLogits(d, batch, s.views.headParams(), last.data(), logits.data());
            s.fetcher.release(s.store.headUnit());
            tokens.assign(batch, 0);
            for (std::size_t b = 0; b < batch; ++b) {
                // A finished sequence still feeds a token (the batch moves together); it is never shown.
                const int chosen = done[b] ? options.padId : model::sampleToken(logits.data() + b * V, V, sampling, b, step, ranked);
                tokens[b] = chosen;
                if (done[b]) continue;
                out[b * newTokens + static_cast<std::size_t>(step)] = chosen;
                if (std::find(options.stopIds.begin(), options.stopIds.end(), chosen) != options.stopIds.end()) {
                    done[b] = 1;
                    ++finished;
                }
            }
            // Every rank samples alike, so every rank stops at the same step.
            if (finished == batch) break;
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
        std::vector<float> values(s.store.params[index].numel);
        s.backend->download(values.data(), s.fetcher.valueOf(index), values.size());
        return values;
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
    // The persistent unit's values, the activations and the reducer's upload buffer come from the
    // backend's buffers too; they are reported in their own categories, not as gathered parameters.
    report.persistentParameters = s.fetcher.persistentBytes();
    const std::size_t elsewhere = report.persistentParameters + s.activationBufferBytes() + s.reducer.uploadBytes();
    report.gatheredParameters = s.backend->bufferBytesHeld() - std::min(s.backend->bufferBytesHeld(), elsewhere);
    report.gatheredParametersPeak = s.backend->bufferBytesPeak() - std::min(s.backend->bufferBytesPeak(), elsewhere);
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

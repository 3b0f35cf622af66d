// Engine::State: what one engine holds, shared by the Engine's method files (engine.cc:
// construction and training; engine_queries.cc: generation, parameter access, reports). Internal
// to src/zero (not part of the core's headers): nothing outside the Engine's own files reads it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mixz/backend/compute_backend.h"
#include "mixz/common/error.h"
#include "mixz/model/llama.h"
#include "mixz/zero/collective_runner.h"
#include "mixz/zero/engine.h"
#include "mixz/zero/fetcher.h"
#include "mixz/zero/gradient_reducer.h"
#include "mixz/zero/layer_views.h"
#include "mixz/zero/parameter_store.h"
#include "mixz/zero/secondaries.h"

namespace mixz::zero {

struct Engine::State {
    // Declaration order is construction order: each piece refers to the ones above it.
    EngineOptions options;
    std::shared_ptr<comm::Communicator> world;
    std::shared_ptr<comm::Communicator> hpz;   // null without hpZ
    std::shared_ptr<comm::Communicator> node;  // qgZ: this node's ranks (null: one rank per node)
    std::shared_ptr<comm::Communicator> cross; // qgZ: this local rank of every node (null: no qgZ)
    // Kernels, compute buffers and the communication queue, on the device the options name.
    std::unique_ptr<backend::ComputeBackend> backend;
    MetricsRecorder metrics;
    CollectiveRunner runner;
    ParameterStore store;
    Secondaries secondaries;
    Fetcher fetcher;
    GradientReducer reducer;
    LoraState lora;
    LayerViews views;

    // Activations: backend buffers and caches, so they live where the kernels run.
    std::vector<backend::Buffer> hidden;
    std::vector<std::unique_ptr<backend::ActivationCache>> caches;
    std::unique_ptr<backend::ActivationCache> headCache;
    backend::Buffer gradA, gradB;
    std::vector<backend::Buffer> persistentGrads; // per group of unit 0, during backward
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
          backend(makeBackendFor(options)),
          runner(backend->communicationQueue(), options.timeout),
          store(options, *backend, world->rank(), world->size(), options.hpzSize),
          secondaries(store, hpz),
          fetcher(options, store, secondaries, *backend, runner, metrics, *world),
          reducer(options, store, *backend, runner, metrics, *world, node.get(), cross.get()),
          views(store, fetcher, lora),
          headCache(backend->makeHeadCache()),
          gradA(*backend),
          gradB(*backend) {
        for (int i = 0; i < options.dims.layers; ++i) caches.push_back(backend->makeLayerCache());
        for (int i = 0; i <= options.dims.layers; ++i) hidden.emplace_back(*backend);
    }

    // The communication queue is drained and joined before anything its tasks touch goes; the
    // buffers and caches go back to the backend before it goes.
    ~State() {
        // The queue runs in order: once this empty task has run, no earlier one touches anything.
        try {
            backend->communicationQueue().submit([] {}).wait();
        } catch (...) {
        }
        hidden.clear();
        caches.clear();
        headCache.reset();
        gradA.release();
        gradB.release();
        persistentGrads.clear();
        fetcher.releasePersistent();
        reducer.releaseBuffers();
        store.units.clear(); // state memory
        backend.reset();
    }

    static std::unique_ptr<backend::ComputeBackend> makeBackendFor(const EngineOptions& o) {
        backend::BackendOptions b = o.backend;
        b.dtype = o.dtype;
        return backend::makeBackend(b);
    }

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

    // Activations held in backend buffers (the backend counts them among its buffers too).
    std::size_t activationBufferBytes() const {
        std::size_t bytes = gradA.bytes() + gradB.bytes();
        for (const auto& h : hidden) bytes += h.bytes();
        for (const auto& g : persistentGrads) bytes += g.bytes();
        return bytes;
    }

    std::size_t activationBytes() const {
        std::size_t bytes = headCache->bytes();
        for (const auto& cache : caches) bytes += cache->bytes();
        for (const auto& h : hidden) bytes += h.bytes();
        bytes += gradA.bytes() + gradB.bytes();
        for (const auto& g : persistentGrads) bytes += g.bytes();
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

} // namespace mixz::zero

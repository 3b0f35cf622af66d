// JS face of mixz::zero::Engine (mixz/zero/engine.h).
//
//   createEngine(descriptor, communicator, {hpz, node, cross}) → Promise<Engine>  (gathers the persistent
//                                                  unit: a collective; each group a Communicator or null)
//     descriptor: {dims: {vocab, hidden, layers, heads, kvHeads, intermediate, maxSeq, ropeTheta, rmsEps,
//                  ropeScaling ("none" | "linear" | "llama3"), ropeFactor, ropeLowFreqFactor,
//                  ropeHighFreqFactor, ropeOriginalMaxSeq, attentionBias (q/k/v biases: Qwen2)},
//                  dtype, seed, initStd, zero: {prefetchBucketSize, maxLiveParameters, persistenceThreshold,
//                  reduceBucketSize, overlapComm}, hasOptimizer (false: inference, every parameter frozen),
//                  optimizer: {beta1, beta2, eps, weightDecay,
//                  decoupledWeightDecay}, kernelThreads, device ("cpu" | "cuda" | "cpu-staged"), deviceOrdinal, quantBlockSize,
//                  quantizeWeights, quantizeGradients, hpzSize, gradientCommDType, timeoutMs}, every field
//                  required, any other ignored.
//     groups: hpz non-null exactly when hpzSize > 1; node/cross only with quantizeGradients (cross
//     non-null exactly then). Collective tags are fixed (mixz/zero/collective_tags.h).
//   engine.params()                              → [{name, shape, numel, partition, unit, trainable, persistent,
//                                                    sliceBegin, sliceLength}]
//   engine.forward({inputIds, labels, micro, seq, train}) → Promise<{loss, counted}>   labels: Int32Array | null
//   engine.backward({lossGrad})                  → Promise<void>
//   engine.step({lr, lossScale, gradientClipping, checkOverflow}) → Promise<{overflow, gradNorm}>
//   engine.zeroGradients()
//   engine.readSlice(index, kind)                → Float32Array   this rank's unpadded slice
//   engine.writeSlice(index, kind, Float32Array)
//   engine.optimizerSteps() / engine.setOptimizerSteps(n)
//   engine.trainingForwards() / engine.setTrainingForwards(n)   (LoRA dropout masks' counter, for checkpoints)
//   engine.memory()                              → MemoryReport (bytes)
//   engine.takeMetrics()                         → EngineMetrics (seconds and bytes since the last call)
//   engine.applyLora({r, alpha, targets, seed, dropout})  freezes the base, adds adapters (not a collective)
//   engine.quantizeNontrainable()                → Promise<{parameters, bytesBefore, bytesAfter}>  (collective)
//   engine.generate({promptIds, batch, promptLength, maxNewTokens, temperature, topK, seed})
//                                                → Promise<Int32Array>  [batch, maxNewTokens] (collective)
//   engine.gatherParameter(index)                → Promise<Float32Array>  the full tensor as compute sees it (collective)
//   engine.abort(reason)                         fails the engine's collectives (job abort)
//   engine.dispose()                             frees everything; the engine is unusable afterwards
//
// One call at a time: a call made while a promise of this engine is pending throws
// MIXZ_ERR_INVALID_ARGUMENT ("busy") instead of racing it; so do readSlice/writeSlice. Typed in
// packages/engine/src/binding/AddonEngineTypes.ts; @mixz/engine validates and builds the descriptor.
#pragma once

#include <napi.h>

#include <memory>

#include "mixz/zero/engine.h"

namespace mixz::addon {

class AddonEngine : public Napi::ObjectWrap<AddonEngine> {
public:
    static Napi::Function define(Napi::Env env);

    explicit AddonEngine(const Napi::CallbackInfo& info);

private:
    Napi::Value params(const Napi::CallbackInfo& info);
    Napi::Value forward(const Napi::CallbackInfo& info);
    Napi::Value backward(const Napi::CallbackInfo& info);
    Napi::Value step(const Napi::CallbackInfo& info);
    Napi::Value zeroGradients(const Napi::CallbackInfo& info);
    Napi::Value readSlice(const Napi::CallbackInfo& info);
    Napi::Value writeSlice(const Napi::CallbackInfo& info);
    Napi::Value optimizerSteps(const Napi::CallbackInfo& info);
    Napi::Value setOptimizerSteps(const Napi::CallbackInfo& info);
    Napi::Value trainingForwards(const Napi::CallbackInfo& info);
    Napi::Value setTrainingForwards(const Napi::CallbackInfo& info);
    Napi::Value memory(const Napi::CallbackInfo& info);
    Napi::Value takeMetrics(const Napi::CallbackInfo& info);
    Napi::Value applyLora(const Napi::CallbackInfo& info);
    Napi::Value quantizeNontrainable(const Napi::CallbackInfo& info);
    Napi::Value generate(const Napi::CallbackInfo& info);
    Napi::Value gatherParameter(const Napi::CallbackInfo& info);
    Napi::Value abort(const Napi::CallbackInfo& info);
    Napi::Value dispose(const Napi::CallbackInfo& info);

    // The engine, unless disposed or busy with another call (InvalidArgument naming `what`).
    std::shared_ptr<zero::Engine> idle(const char* what) const;

    std::shared_ptr<zero::Engine> engine_;
    std::shared_ptr<bool> busy_ = std::make_shared<bool>(false);
};

// createEngine(descriptor, communicator): register through guarded<>.
Napi::Value createEngine(const Napi::CallbackInfo& info);

} // namespace mixz::addon

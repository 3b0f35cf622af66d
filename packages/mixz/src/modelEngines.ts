import type {LlamaModel, ZeroEngine} from "@mixz/engine";
import {ErrorCodes, MixzError} from "@mixz/protocol";

/**
 * Which engine a model description was initialized into: the seed's flow converts "the model" to
 * LoRA after initialize() (`lora.apply(model, …)`), so the model must lead to its engine.
 */
const engines = new WeakMap<LlamaModel, ZeroEngine>();

export function attachEngine(model: LlamaModel, engine: ZeroEngine): void {
    engines.set(model, engine);
}

/** The engine of `model`, or the engine itself when one is passed. */
export function engineOf(modelOrEngine: LlamaModel | ZeroEngine, fn: string): ZeroEngine {
    if (modelOrEngine !== null && typeof modelOrEngine === "object" && "forward" in modelOrEngine) return modelOrEngine;
    const engine = engines.get(modelOrEngine as LlamaModel);
    if (engine === undefined) {
        throw new MixzError(ErrorCodes.engineState, `${fn}: this model has no engine yet; call initialize({model, config}) first`, {category: "user"});
    }
    return engine;
}

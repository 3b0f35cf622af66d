import type {LlamaModel, ZeroEngine} from "@mixz/engine";
import {engineOf} from "./modelEngines.js";

export interface LoraOptions {
    /** Rank of the adapters. */
    readonly r: number;
    /** Scale numerator: adapters add (alpha / r)·B·A·x. Default r. */
    readonly alpha?: number;
    /** Only 0 is supported. */
    readonly dropout?: number;
    /** Linear names of a decoder layer (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj). Default q_proj, v_proj (PEFT's LLaMA default). */
    readonly targetModules?: readonly string[];
    /** Seeds lora_A's initial values; default the model's seed. */
    readonly seed?: number;
}

/**
 * LoRA after initialize(), as in the seed's flow: `lora.apply(model, {r, alpha, targetModules})`
 * freezes the base and adds trainable adapters on every rank's engine (B starts at zero, so the
 * model's outputs are unchanged until training moves it).
 */
export const lora = {
    apply(model: LlamaModel | ZeroEngine, options: LoraOptions): void {
        engineOf(model, "lora.apply").applyLora(options);
    }
};

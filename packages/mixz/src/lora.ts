import {loadPeftAdapter, mergeLora, savePeftAdapter, type LlamaModel, type ZeroEngine} from "@mixz/engine";
import {engineOf} from "./modelEngines.js";

export interface LoraOptions {
    /** Rank of the adapters. */
    readonly r: number;
    /** Scale numerator: adapters add (alpha / r)·B·A·x. Default r. */
    readonly alpha?: number;
    /** PEFT's lora_dropout: probability in [0, 1) of dropping an adapter input element in training forwards. Default 0. */
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
    },
    /** Writes the adapters in Hugging Face PEFT's layout (adapter_config.json + adapter_model.safetensors). A collective. */
    savePeftAdapter(engine: LlamaModel | ZeroEngine, dir: string): Promise<void> {
        return savePeftAdapter(engineOf(engine, "lora.savePeftAdapter"), dir);
    },
    /** Loads PEFT adapters written for this model and LoRA configuration; nothing is loaded on a mismatch. A collective. */
    loadPeftAdapter(engine: LlamaModel | ZeroEngine, dir: string): Promise<void> {
        return loadPeftAdapter(engineOf(engine, "lora.loadPeftAdapter"), dir);
    },
    /** Exports the model with the adapters folded into the base weights (W + alpha/r·B·A), as a Hugging Face model. A collective. */
    merge(engine: LlamaModel | ZeroEngine, dir: string): Promise<void> {
        return mergeLora(engineOf(engine, "lora.merge"), dir);
    }
};

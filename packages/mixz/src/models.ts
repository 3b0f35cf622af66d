import {fromPretrainedLlama, llama, type FromPretrainedOptions, type LlamaConfig, type LlamaModel} from "@mixz/engine";

/** `models.llama(config)`, and `models.llama.fromPretrained(dir)` for a Hugging Face model directory. */
export interface LlamaBuilder {
    (config: LlamaConfig): LlamaModel;
    /**
     * Describes the Hugging Face LLaMA model in `dir` (config.json + model.safetensors, or shards
     * with model.safetensors.index.json; F32, F16 or BF16), reading only config.json and the
     * safetensors headers. initialize() then loads it, each rank reading only its own slices. A tied
     * model's LM head is loaded from the embedding and trained as its own parameter.
     */
    readonly fromPretrained: (dir: string, options?: FromPretrainedOptions) => Promise<LlamaModel>;
}

const llamaBuilder: LlamaBuilder = Object.assign((config: LlamaConfig): LlamaModel => llama(config), {
    fromPretrained: (dir: string, options?: FromPretrainedOptions): Promise<LlamaModel> => fromPretrainedLlama(dir, options)
});

/** Model builders: `models.llama(config)` describes a LLaMA-family decoder (nothing is allocated until initialize()). */
export const models: {readonly llama: LlamaBuilder} = {llama: llamaBuilder};

import {llama, type LlamaConfig, type LlamaModel} from "@mixz/engine";

/** Model builders: `models.llama(config)` describes a LLaMA-family decoder (nothing is allocated until initialize()). */
export const models: {readonly llama: (config: LlamaConfig) => LlamaModel} = {llama};

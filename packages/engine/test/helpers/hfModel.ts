// Small Hugging Face LLaMA model directories for tests: config.json and safetensors written here
// (single file or sharded with model.safetensors.index.json; F32, F16 or BF16; tied or not), with
// the fp32 values every tensor holds after rounding to its dtype.
import {mkdirSync, writeFileSync} from "node:fs";
import {join} from "node:path";

import {convertFloats, llamaTensorShapes, llama, writeSafetensors, type LlamaConfig, type SafetensorsTensor} from "@mixz/engine";

export type HfDType = "F32" | "F16" | "BF16";

export interface HfModelOptions {
    readonly config: LlamaConfig;
    readonly dtype?: HfDType;
    /** Number of shard files; 0 or absent: one model.safetensors. */
    readonly shards?: number;
    readonly tied?: boolean;
    /** Extra or replaced config.json keys. */
    readonly hfConfig?: Record<string, unknown>;
    /** Values are derived from it. */
    readonly seed?: number;
    /** How far matrix entries and biases (and norm weights, around 1) swing; default 0.05. Larger weights make
     * attention depend visibly on positions (the rotary tests). */
    readonly amplitude?: number;
    /** Changes a tensor before writing: return null to leave it out. */
    readonly edit?: (tensor: {name: string; shape: number[]}) => {name: string; shape: number[]} | null;
}

export interface HfModel {
    readonly dir: string;
    /** By tensor name, the fp32 values it holds (rounded through its dtype). */
    readonly values: Map<string, Float32Array>;
}

const torchDType = {F32: "float32", F16: "float16", BF16: "bfloat16"} as const;

export function hfConfigJson(config: LlamaConfig, tied = false, dtype: HfDType = "F32"): Record<string, unknown> {
    return {
        architectures: ["LlamaForCausalLM"],
        model_type: "llama",
        vocab_size: config.vocabSize,
        hidden_size: config.hidden,
        intermediate_size: config.intermediate,
        num_hidden_layers: config.layers,
        num_attention_heads: config.heads,
        num_key_value_heads: config.kvHeads ?? config.heads,
        max_position_embeddings: config.maxSeqLen,
        rope_theta: config.ropeTheta ?? 10_000,
        rms_norm_eps: config.rmsEps ?? 1e-6,
        hidden_act: "silu",
        tie_word_embeddings: tied,
        torch_dtype: torchDType[dtype],
        bos_token_id: 1,
        eos_token_id: 2
    };
}

/** Writes a model into `dir` (created). */
export async function writeHfModel(dir: string, options: HfModelOptions): Promise<HfModel> {
    mkdirSync(dir, {recursive: true});
    const dtype = options.dtype ?? "F32";
    const model = llama(options.config);
    const seed = options.seed ?? 1;
    const amplitude = options.amplitude ?? 0.05;
    const values = new Map<string, Float32Array>();
    const tensors: SafetensorsTensor[] = [];
    let t = 0;
    for (const spec of llamaTensorShapes(model.config)) {
        t += 1;
        if (options.tied === true && spec.name === "lm_head.weight") continue;
        const edited = options.edit === undefined ? spec : options.edit({name: spec.name, shape: [...spec.shape]});
        if (edited === null) continue;
        const n = edited.shape.reduce((a, b) => a * b, 1);
        // Norm weights swing around 1, biases (Qwen2's q/k/v) around 0.
        const isNorm = edited.shape.length === 1 && !edited.name.endsWith(".bias");
        const exact = Float32Array.from({length: n}, (_, i) => (isNorm ? 1 : 0) + amplitude * Math.sin(seed * 7.1 + t * 1.37 + i * 0.61));
        const data = dtype === "F32" ? exact : await convertFloats(exact, {from: "fp32", to: dtype === "F16" ? "fp16" : "bf16"});
        const rounded = data instanceof Float32Array ? data : await convertFloats(data, {from: dtype === "F16" ? "fp16" : "bf16", to: "fp32"});
        values.set(edited.name, rounded);
        tensors.push({name: edited.name, dtype, shape: edited.shape, data});
    }
    writeFileSync(join(dir, "config.json"), JSON.stringify({...hfConfigJson(options.config, options.tied ?? false, dtype), ...options.hfConfig}, null, 2));
    const shards = options.shards ?? 0;
    if (shards <= 1) {
        await writeSafetensors(join(dir, "model.safetensors"), tensors, {format: "pt"});
    } else {
        const weightMap: Record<string, string> = {};
        for (let s = 0; s < shards; s++) {
            const name = `model-${String(s + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.safetensors`;
            const part = tensors.filter((_, i) => i % shards === s);
            for (const tensor of part) weightMap[tensor.name] = name;
            await writeSafetensors(join(dir, name), part, {format: "pt"});
        }
        writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({metadata: {total_size: 0}, weight_map: weightMap}, null, 2));
    }
    return {dir, values};
}

/**
 * Hugging Face LLaMA models: reading a model directory into the ZeRO-3 engine, and exporting the
 * engine's weights as one.
 *
 * A model directory (what `save_pretrained` writes):
 *   config.json                     LlamaConfig: vocab_size, hidden_size, num_hidden_layers,
 *                                   num_attention_heads, num_key_value_heads, intermediate_size,
 *                                   max_position_embeddings, rope_theta, rope_scaling ("linear",
 *                                   "llama3"), rms_norm_eps, tie_word_embeddings, torch_dtype (or
 *                                   dtype); model_type "llama", "mistral" whose sliding_window
 *                                   is null or at least the engine's longest sequence, or "qwen2"
 *                                   (Qwen2ForCausalLM: LLaMA plus biases on q_proj, k_proj and
 *                                   v_proj, read as model.layers.N.self_attn.{q,k,v}_proj.bias;
 *                                   use_sliding_window must be false, and then sliding_window and
 *                                   max_window_layers are not read)
 * Anything else in config.json that would change the maths (attention_bias or mlp_bias on a llama,
 * another activation or rope_type, head_dim ≠ hidden_size / num_attention_heads, partial rotary,
 * attention dropout, a Qwen2 sliding window) is refused in one line naming the field.
 *   model.safetensors               every tensor, or, when sharded:
 *   model.safetensors.index.json    {"metadata": {...}, "weight_map": {tensor name: shard file}}
 *   model-0000k-of-0000n.safetensors
 * Tensors carry Hugging Face's names (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight,
 * …, model.norm.weight, lm_head.weight), which are the engine's parameter names, in F32, F16 or BF16.
 *
 * Tied embeddings (tie_word_embeddings: true, no lm_head.weight in the files): the engine's LM head
 * is a separate parameter, so it is loaded from model.embed_tokens.weight — the same values — and
 * trains apart from the embedding from then on. An export therefore always writes lm_head.weight
 * and tie_word_embeddings: false. (Small Qwen2 models are tied: the same holds for them.) An export
 * keeps the family: a mistral stays a mistral, a qwen2 (or any model with attentionBias) is written
 * as model_type "qwen2" / Qwen2ForCausalLM with its q/k/v biases.
 *
 * Loading is two-phase. fromPretrainedLlama reads config.json and the safetensors headers only
 * (never tensor data) and checks that every tensor the config implies exists with its shape and a
 * float dtype; it returns a LlamaModel carrying `pretrained`. When the engine is created, every
 * rank reads, for each parameter, only the element range [sliceBegin, sliceBegin + sliceLength) of
 * the flattened tensor that its own slice holds (a positioned read of exactly those bytes),
 * converts it to fp32, and keeps it; the ranks then agree that all of them succeeded, and only
 * then write their slices. Any error — a file changed since its header was read, a truncated file —
 * leaves every rank's engine as it was.
 *
 * Export (a collective): rank 0 writes config.json and model.safetensors in the engine's dtype.
 * Tensors are gathered one at a time, when rank 0's safetensors writer asks for the next one: rank 0
 * broadcasts the parameter's index, every rank contributes its slice to an all-gather of the padded
 * partitions, and rank 0 converts the full tensor and hands it to the writer. So rank 0 holds one
 * full tensor at a time (each rank holds one during its all-gather), never the model. Files are
 * written into a staging directory dir/.mixz-export.tmp-<nonce>; once every rank reports success,
 * rank 0 renames model.safetensors, then config.json, into dir (each rename atomic) and removes the
 * staging directory. A failure on any rank makes every rank throw and leaves dir's files untouched.
 */
import {randomBytes} from "node:crypto";
import {mkdir, open, readdir, readFile, rename, rm, stat} from "node:fs/promises";
import type {FileHandle} from "node:fs/promises";
import {isAbsolute, join, resolve} from "node:path";

import {ErrorCodes, InputError, MixzError, type Problem} from "@mixz/protocol";

import type {NativeModelDType, NativeParamInfo} from "../binding/AddonEngineTypes.js";
import type {CheckpointAccess} from "../train/checkpoint.js";
import {llama, type LlamaConfig, type LlamaModel, type LlamaRopeScaling} from "../model/llama.js";
import {convertFloats} from "../quant/quantize.js";
import {readSafetensorsHeader, readTensor, writeSafetensors, type SafetensorsHeader, type SafetensorsTensor} from "./safetensors.js";
import {syncDirectory, writeDurably} from "./durableFiles.js";
import {errnoOf, writeError} from "./fileErrors.js";
import {CollectiveTags} from "../comm/collectiveTags.js";
import {everyRankTries, rootTries} from "../comm/ranksAgree.js";

/** The float dtypes a pretrained tensor may have on disk. */
export type PretrainedDType = "F32" | "F16" | "BF16";

/** Where one of the engine's parameters is found. */
export interface PretrainedTensor {
    /** The safetensors file that holds it (absolute path). */
    readonly file: string;
    /** Its name in that file: the parameter's own name, or model.embed_tokens.weight for a tied LM head. */
    readonly name: string;
    readonly dtype: PretrainedDType;
    readonly shape: readonly number[];
}

/** What fromPretrainedLlama found; only file names, shapes and dtypes, no tensor data. */
export interface PretrainedSource {
    /** The model directory (absolute). */
    readonly dir: string;
    readonly configFile: string;
    /** model.safetensors.index.json when the weights are sharded, else null. */
    readonly indexFile: string | null;
    /** The safetensors files, absolute, in name order. */
    readonly files: readonly string[];
    /** tie_word_embeddings: the LM head is loaded from model.embed_tokens.weight. */
    readonly tiedEmbeddings: boolean;
    /** config.json's torch_dtype (or dtype), when it names one. */
    readonly torchDtype: "float32" | "float16" | "bfloat16" | null;
    /** config.json as read, so an export keeps its other keys (token ids, …). */
    readonly hfConfig: Readonly<Record<string, unknown>>;
    /** By engine parameter name. */
    readonly tensors: Readonly<Record<string, PretrainedTensor>>;
}

export interface FromPretrainedOptions {
    /** The longest sequence the engine supports; default max_position_embeddings, at most that. */
    readonly maxSeqLen?: number;
    /** Seeds what the engine initializes itself (LoRA adapters); default 0. */
    readonly seed?: number;
}

/** Bytes and tensors one rank read while loading a pretrained model (for tests and logs). */
export interface PretrainedLoadReport {
    /** Header bytes plus tensor bytes. */
    readonly bytesRead: number;
    readonly tensorBytesRead: number;
    /** Tensor range reads made. */
    readonly reads: number;
    readonly files: number;
}

export const pretrainedConfigName = "config.json";
export const pretrainedWeightsName = "model.safetensors";
export const pretrainedIndexName = "model.safetensors.index.json";

/** Collective tags: apart from the engine's (7001–7003) and checkpoints' (7101–7104). */
const kTags = CollectiveTags.pretrained;

const kStagingPattern = /^\.mixz-export\.tmp-[0-9a-f]{16}$/;
const kShardPattern = /^[^/\\]+\.safetensors$/;

const paramDTypeOf: Readonly<Record<NativeModelDType, PretrainedDType>> = {fp32: "F32", fp16: "F16", bf16: "BF16"};
const torchDTypeOf: Readonly<Record<NativeModelDType, string>> = {fp32: "float32", fp16: "float16", bf16: "bfloat16"};

/** Tensor names the Hugging Face checkpoints of older transformers carry that the model recomputes. */
const kIgnoredTensor = /^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/;

// ---------------------------------------------------------------------------------------------
// Describing

/**
 * The parameters of a LLaMA model with their Hugging Face names and shapes, in the engine's order
 * (embedding, per layer q, k, v, [q, k, v biases with attentionBias], o, gate, up, down, the two
 * norms, final norm, LM head).
 */
export function llamaTensorShapes(config: Required<LlamaConfig>): {name: string; shape: number[]}[] {
    const {vocabSize: v, hidden: h, layers, heads, kvHeads, intermediate: i} = config;
    const kv = (h / heads) * kvHeads;
    const out: {name: string; shape: number[]}[] = [{name: "model.embed_tokens.weight", shape: [v, h]}];
    for (let l = 0; l < layers; l++) {
        const p = `model.layers.${l}`;
        out.push(
            {name: `${p}.self_attn.q_proj.weight`, shape: [h, h]},
            {name: `${p}.self_attn.k_proj.weight`, shape: [kv, h]},
            {name: `${p}.self_attn.v_proj.weight`, shape: [kv, h]}
        );
        if (config.attentionBias) {
            out.push(
                {name: `${p}.self_attn.q_proj.bias`, shape: [h]},
                {name: `${p}.self_attn.k_proj.bias`, shape: [kv]},
                {name: `${p}.self_attn.v_proj.bias`, shape: [kv]}
            );
        }
        out.push(
            {name: `${p}.self_attn.o_proj.weight`, shape: [h, h]},
            {name: `${p}.mlp.gate_proj.weight`, shape: [i, h]},
            {name: `${p}.mlp.up_proj.weight`, shape: [i, h]},
            {name: `${p}.mlp.down_proj.weight`, shape: [h, i]},
            {name: `${p}.input_layernorm.weight`, shape: [h]},
            {name: `${p}.post_attention_layernorm.weight`, shape: [h]}
        );
    }
    out.push({name: "model.norm.weight", shape: [h]}, {name: "lm_head.weight", shape: [v, h]});
    return out;
}

/**
 * Describes the Hugging Face LLaMA model in `dir` (models.llama.fromPretrained): reads config.json
 * and the safetensors headers, checks every tensor, reads no tensor data. Throws InputError:
 * MIXZ_ERR_FILE_READ for missing files, MIXZ_ERR_SAFETENSORS for a malformed or truncated
 * safetensors file (naming it), MIXZ_ERR_MODEL_CONFIG for a config mixz cannot train or weights
 * that do not match it (naming the tensor, the expected and the found shape).
 */
export async function fromPretrainedLlama(dir: string, options: FromPretrainedOptions = {}): Promise<LlamaModel> {
    if (typeof dir !== "string" || dir === "") {
        throw new InputError([{code: ErrorCodes.modelConfig, path: "models.llama.fromPretrained", message: `dir must be a non-empty path string, got ${JSON.stringify(dir) ?? typeof dir}`}]);
    }
    if (typeof options !== "object" || options === null) {
        throw new InputError([{code: ErrorCodes.modelConfig, path: "models.llama.fromPretrained", message: "options must be an object"}]);
    }
    const root = isAbsolute(dir) ? dir : resolve(dir);
    const entries = await listDirectory(root);
    const configFile = join(root, pretrainedConfigName);
    if (!entries.includes(pretrainedConfigName)) {
        throw new InputError([{code: ErrorCodes.fileRead, file: configFile, message: `missing: ${JSON.stringify(dir)} is not a Hugging Face model directory (it has ${describeEntries(entries)})`}]);
    }
    const hfConfig = parseJsonObject(configFile, await readText(configFile), ErrorCodes.modelConfig);
    const {config, tied, torchDtype} = llamaConfigOf(configFile, hfConfig, options);
    let model: LlamaModel;
    try {
        model = llama(config);
    } catch (error) {
        if (error instanceof InputError) {
            throw new InputError(error.problems.map((p) => ({...p, file: configFile})));
        }
        throw error;
    }

    // Which file holds which tensor.
    const {indexFile, single, weightMap} = await locateWeights(root, entries);
    const files = single !== null ? [single] : [...new Set(weightMap.values())].sort();
    const headers = new Map<string, SafetensorsHeader>();
    for (const file of files) headers.set(file, await readSafetensorsHeader(file));
    if (single !== null) {
        for (const name of headers.get(single)!.tensors.keys()) weightMap.set(name, single);
    }

    // Every expected tensor: present, its shape, a float dtype. Nothing unexpected.
    const problems: Problem[] = [];
    const tensors: Record<string, PretrainedTensor> = {};
    const expected = llamaTensorShapes(model.config);
    const expectedNames = new Set(expected.map((e) => e.name));
    const dims = `hidden_size ${model.config.hidden}, intermediate_size ${model.config.intermediate}, vocab_size ${model.config.vocabSize}, ` +
        `num_attention_heads ${model.config.heads}, num_key_value_heads ${model.config.kvHeads}`;
    for (const {name, shape} of expected) {
        const sourceName = name === "lm_head.weight" && tied ? "model.embed_tokens.weight" : name;
        const file = weightMap.get(sourceName);
        const info = file === undefined ? undefined : headers.get(file)!.tensors.get(sourceName);
        const where = file ?? (indexFile ?? join(root, pretrainedWeightsName));
        if (file === undefined || info === undefined) {
            const because = name === "lm_head.weight" ? " (config.json says tie_word_embeddings false, so the LM head must be stored)" : "";
            problems.push({code: ErrorCodes.modelConfig, file: where, message: `tensor ${JSON.stringify(sourceName)} is missing${because}; config.json (${dims}, num_hidden_layers ${model.config.layers}) needs it`});
            continue;
        }
        if (info.dtype !== "F32" && info.dtype !== "F16" && info.dtype !== "BF16") {
            problems.push({code: ErrorCodes.modelConfig, file, message: `tensor ${JSON.stringify(sourceName)} is ${info.dtype}; mixz loads F32, F16 or BF16 weights`});
            continue;
        }
        if (info.shape.length !== shape.length || info.shape.some((d, k) => d !== shape[k])) {
            problems.push({code: ErrorCodes.modelConfig, file, message: `tensor ${JSON.stringify(sourceName)} has shape [${info.shape.join(",")}], config.json (${dims}) expects [${shape.join(",")}]`});
            continue;
        }
        tensors[name] = {file, name: sourceName, dtype: info.dtype, shape};
    }
    for (const [name, file] of weightMap) {
        if (expectedNames.has(name) || kIgnoredTensor.test(name)) continue;
        problems.push({code: ErrorCodes.modelConfig, file, message: `unexpected tensor ${JSON.stringify(name)}: config.json (num_hidden_layers ${model.config.layers}) describes no such parameter`});
    }
    if (problems.length > 0) throw new InputError(problems.slice(0, 12));

    const pretrained: PretrainedSource = {dir: root, configFile, indexFile, files, tiedEmbeddings: tied, torchDtype, hfConfig, tensors};
    return {...model, pretrained};
}

/** config.json → mixz's LlamaConfig; refuses what the engine does not implement. */
function llamaConfigOf(
    file: string,
    hf: Record<string, unknown>,
    options: FromPretrainedOptions
): {config: LlamaConfig; tied: boolean; torchDtype: PretrainedSource["torchDtype"]} {
    const problems: Problem[] = [];
    const bad = (key: string, message: string): void => {
        problems.push({code: ErrorCodes.modelConfig, file, path: key, message});
    };
    // Mistral is LLaMA's layout and maths (no biases) plus a sliding attention window, which is
    // checked below against the sequence lengths the engine will use. Qwen2 is LLaMA's layout plus
    // biases on q, k and v (always: Qwen2's config has no switch for them), with its sliding window
    // off.
    const modelType = hf["model_type"];
    const family = modelType === "mistral" ? "mistral" : modelType === "qwen2" ? "qwen2" : "llama";
    if (modelType !== undefined && modelType !== "llama" && modelType !== "mistral" && modelType !== "qwen2") {
        bad("model_type", `mixz trains LLaMA-family models (model_type "llama", "mistral" or "qwen2"), got ${JSON.stringify(modelType)}`);
    }
    const architecture = family === "mistral" ? "MistralForCausalLM" : family === "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
    const architectures = hf["architectures"];
    // Checked only for a model_type mixz trains (one line for an unsupported family, not two).
    const knownType = modelType === undefined || modelType === "llama" || modelType === "mistral" || modelType === "qwen2";
    if (knownType && architectures !== undefined && architectures !== null && !(Array.isArray(architectures) && architectures.includes(architecture))) {
        bad("architectures", `mixz trains ${architecture} for model_type ${JSON.stringify(family)}, got ${JSON.stringify(architectures)}`);
    }
    const ropeScaling = ropeScalingOf(hf, family, bad, () => problems.length);
    const partialRotary = hf["partial_rotary_factor"];
    if (partialRotary !== undefined && partialRotary !== null && partialRotary !== 1) {
        bad("partial_rotary_factor", `the engine rotates the whole head (factor 1), got ${JSON.stringify(partialRotary)}`);
    }
    const attentionDropout = hf["attention_dropout"];
    if (attentionDropout !== undefined && attentionDropout !== null && attentionDropout !== 0) {
        bad("attention_dropout", `the engine has no attention dropout (0), got ${JSON.stringify(attentionDropout)}; set it to 0.0`);
    }
    const act = hf["hidden_act"];
    if (act !== undefined && act !== "silu") bad("hidden_act", `the engine's MLP is SwiGLU (silu), got ${JSON.stringify(act)}`);
    // A llama's attention_bias would put biases on o_proj too; Qwen2 does not read the key (its
    // q/k/v biases are fixed by the architecture), and neither does mixz for it.
    for (const key of family === "qwen2" ? ["mlp_bias"] : ["attention_bias", "mlp_bias"]) {
        if (hf[key] !== undefined && hf[key] !== false) bad(key, `biases are not supported (got ${JSON.stringify(hf[key])})`);
    }
    const required = (key: string): number => {
        const value = hf[key];
        if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
            bad(key, `must be a positive integer, got ${JSON.stringify(value) ?? "nothing"}`);
            return 2;
        }
        return value;
    };
    const vocabSize = required("vocab_size");
    const hidden = required("hidden_size");
    const layers = required("num_hidden_layers");
    const heads = required("num_attention_heads");
    const kvHeads = hf["num_key_value_heads"] === undefined || hf["num_key_value_heads"] === null ? heads : required("num_key_value_heads");
    const intermediate = required("intermediate_size");
    const maxPositions = required("max_position_embeddings");
    const headDim = hf["head_dim"];
    if (headDim !== undefined && headDim !== null && headDim !== hidden / heads) {
        bad("head_dim", `${JSON.stringify(headDim)} differs from hidden_size / num_attention_heads = ${hidden / heads}; mixz needs them equal`);
    }
    const positive = (key: string, fallback: number, value: unknown = hf[key]): number => {
        if (value === undefined || value === null) return fallback;
        if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
            bad(key, `must be a positive number, got ${JSON.stringify(value)}`);
            return fallback;
        }
        return value;
    };
    const parameters = hf["rope_parameters"];
    const nestedTheta = typeof parameters === "object" && parameters !== null ? (parameters as Record<string, unknown>)["rope_theta"] : undefined;
    const ropeTheta = hf["rope_theta"] === undefined && nestedTheta !== undefined ? positive("rope_parameters.rope_theta", 10_000, nestedTheta) : positive("rope_theta", 10_000);
    const rmsEps = positive("rms_norm_eps", 1e-6);
    const initStd = positive("initializer_range", 0.02);
    const tiedValue = hf["tie_word_embeddings"] ?? false;
    if (typeof tiedValue !== "boolean") bad("tie_word_embeddings", `must be true or false, got ${JSON.stringify(tiedValue)}`);
    const dtypeValue = hf["torch_dtype"] ?? hf["dtype"] ?? null;
    if (dtypeValue !== null && dtypeValue !== "float32" && dtypeValue !== "float16" && dtypeValue !== "bfloat16") {
        bad("torch_dtype", `must be "float32", "float16" or "bfloat16", got ${JSON.stringify(dtypeValue)}`);
    }
    let maxSeqLen = Math.min(maxPositions, 1 << 24);
    if (options.maxSeqLen !== undefined) {
        const cap = options.maxSeqLen;
        if (!Number.isSafeInteger(cap) || cap < 1 || cap > maxPositions) {
            problems.push({code: ErrorCodes.modelConfig, path: "models.llama.fromPretrained: options.maxSeqLen", message: `must be an integer in [1, ${maxPositions}] (max_position_embeddings), got ${JSON.stringify(cap)}`});
        } else {
            maxSeqLen = cap;
        }
    }
    // Mistral's window: position t attends to the last sliding_window positions only. Sequences no
    // longer than the window never reach its edge, so there the full causal attention the engine
    // computes is exactly Mistral's.
    const window = hf["sliding_window"];
    if (family === "qwen2") {
        // Qwen2 slides its window only with use_sliding_window (then over the layers from
        // max_window_layers on); off, sliding_window and max_window_layers change nothing.
        const sliding = hf["use_sliding_window"];
        if (sliding !== undefined && sliding !== null && sliding !== false) {
            bad("use_sliding_window", `must be false: the engine attends over the whole causal window, got ${JSON.stringify(sliding)}`);
        }
        const layerTypes = hf["layer_types"];
        if (Array.isArray(layerTypes) && layerTypes.some((t) => t !== "full_attention")) {
            bad("layer_types", `every layer must be "full_attention" (the engine has no sliding window), got ${JSON.stringify(layerTypes)}`);
        }
    }
    if (family === "mistral" && window !== undefined && window !== null) {
        if (typeof window !== "number" || !Number.isSafeInteger(window) || window < 1) {
            bad("sliding_window", `must be null or a positive integer, got ${JSON.stringify(window)}`);
        } else if (window < maxSeqLen) {
            const limit = options.maxSeqLen !== undefined ? `options.maxSeqLen ${maxSeqLen}` : `max_position_embeddings ${maxSeqLen}`;
            bad("sliding_window", `${window} is below the engine's longest sequence (${limit}); the engine attends over the whole causal window, so pass options.maxSeqLen ≤ ${window} to train within the window`);
        }
    }
    if (problems.length > 0) throw new InputError(problems);
    const config: LlamaConfig = {vocabSize, hidden, layers, heads, kvHeads, intermediate, maxSeqLen, ropeTheta, ropeScaling, attentionBias: family === "qwen2", rmsEps, initStd, seed: options.seed ?? 0};
    return {config, tied: tiedValue === true, torchDtype: dtypeValue as PretrainedSource["torchDtype"]};
}

/** rope_scaling's keys mixz reads, by kind (rope_type and its older name type besides). */
const kRopeScalingKeys: Readonly<Record<"linear" | "llama3", readonly string[]>> = {
    linear: ["factor"],
    llama3: ["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"]
};

/**
 * config.json's rope_scaling → LlamaConfig.ropeScaling: "linear" and "llama3" (Hugging Face's
 * formulas, computed natively), null, or "default" (none); anything else is refused naming the
 * field. Keys mixz does not read are refused too, since they might change the maths.
 */
function ropeScalingOf(
    hf: Record<string, unknown>,
    family: "llama" | "mistral" | "qwen2",
    bad: (key: string, message: string) => void,
    problemCount: () => number
): LlamaRopeScaling | null {
    // transformers 5 writes rope_parameters (rope_type, rope_theta and the scaling's numbers) instead.
    const field = hf["rope_scaling"] === undefined && hf["rope_parameters"] !== undefined ? "rope_parameters" : "rope_scaling";
    const value = hf[field];
    if (value === undefined || value === null) return null;
    // Qwen2 computes its rotary frequencies as LLaMA does (the same rope_scaling kinds).
    if (family === "mistral") {
        bad(field, `mixz reads ${field} for model_type "llama" and "qwen2" only, got ${JSON.stringify(value)} for ${JSON.stringify(family)}; remove it or set null`);
        return null;
    }
    if (typeof value !== "object" || Array.isArray(value)) {
        bad(field, `must be null or an object with rope_type "linear" or "llama3", got ${JSON.stringify(value)}`);
        return null;
    }
    const v = value as Record<string, unknown>;
    const rt = v["rope_type"];
    const legacy = v["type"];
    if (rt !== undefined && legacy !== undefined && rt !== legacy) {
        bad(`${field}.rope_type`, `${JSON.stringify(rt)} contradicts ${field}.type ${JSON.stringify(legacy)}`);
        return null;
    }
    const kind = rt ?? legacy;
    if (kind === "default") return null;
    if (kind !== "linear" && kind !== "llama3") {
        bad(`${field}.rope_type`, `${JSON.stringify(kind) ?? "nothing"} is not supported; mixz implements "linear" and "llama3" rotary scaling`);
        return null;
    }
    const keys = kRopeScalingKeys[kind];
    for (const key of Object.keys(v)) {
        if (key !== "rope_type" && key !== "type" && !(field === "rope_parameters" && key === "rope_theta") && !keys.includes(key)) {
            bad(`${field}.${key}`, `is not read by mixz's ${JSON.stringify(kind)} scaling (it reads ${keys.join(", ")}); remove it`);
        }
    }
    const positive = (key: string): number => {
        const x = v[key];
        if (typeof x !== "number" || !Number.isFinite(x) || x <= 0) {
            bad(`${field}.${key}`, `must be a positive number for ${JSON.stringify(kind)} scaling, got ${JSON.stringify(x) ?? "nothing"}`);
            return 1;
        }
        return x;
    };
    const factor = positive("factor");
    if (kind === "linear") return {type: "linear", factor};
    const before = problemCount();
    const lowFreqFactor = positive("low_freq_factor");
    const highFreqFactor = positive("high_freq_factor");
    const originalMaxPositions = positive("original_max_position_embeddings");
    // Compared only when both were given (no second line about a missing one's placeholder).
    if (problemCount() === before && highFreqFactor <= lowFreqFactor) {
        bad(`${field}.high_freq_factor`, `must be above low_freq_factor ${lowFreqFactor}, got ${highFreqFactor}`);
    }
    return {type: "llama3", factor, lowFreqFactor, highFreqFactor, originalMaxPositions};
}

/** LlamaConfig.ropeScaling → config.json's rope_scaling (both key spellings, for older readers). */
function hfRopeScalingOf(scaling: LlamaRopeScaling | null): Record<string, unknown> | null {
    if (scaling === null) return null;
    if (scaling.type === "linear") return {rope_type: "linear", type: "linear", factor: scaling.factor};
    return {
        rope_type: "llama3",
        type: "llama3",
        factor: scaling.factor,
        low_freq_factor: scaling.lowFreqFactor,
        high_freq_factor: scaling.highFreqFactor,
        original_max_position_embeddings: scaling.originalMaxPositions
    };
}

/** model.safetensors, or the index's weight map with every shard checked to exist. */
async function locateWeights(root: string, entries: readonly string[]): Promise<{indexFile: string | null; single: string | null; weightMap: Map<string, string>}> {
    if (entries.includes(pretrainedWeightsName)) {
        // As transformers does: the single file wins over an index next to it.
        return {indexFile: null, single: join(root, pretrainedWeightsName), weightMap: new Map()};
    }
    const indexFile = join(root, pretrainedIndexName);
    if (!entries.includes(pretrainedIndexName)) {
        const hint = entries.some((e) => e.endsWith(".bin") || e.endsWith(".pt")) ? "; PyTorch .bin weights are not read: convert them to safetensors" : "";
        throw new InputError([{
            code: ErrorCodes.fileRead,
            file: join(root, pretrainedWeightsName),
            message: `missing: the directory has neither ${pretrainedWeightsName} nor ${pretrainedIndexName} (it has ${describeEntries(entries)})${hint}`
        }]);
    }
    const index = parseJsonObject(indexFile, await readText(indexFile), ErrorCodes.safetensors);
    const map = index["weight_map"];
    if (typeof map !== "object" || map === null || Array.isArray(map)) {
        throw new InputError([{code: ErrorCodes.safetensors, file: indexFile, path: "weight_map", message: "must be an object {tensor name: shard file}"}]);
    }
    const weightMap = new Map<string, string>();
    for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
        if (typeof shard !== "string" || !kShardPattern.test(shard) || shard === "." || shard === "..") {
            throw new InputError([{code: ErrorCodes.safetensors, file: indexFile, path: `weight_map.${name}`, message: `must name a .safetensors file in the model directory, got ${JSON.stringify(shard)}`}]);
        }
        if (!entries.includes(shard)) {
            throw new InputError([{code: ErrorCodes.fileRead, file: join(root, shard), message: `missing: ${pretrainedIndexName} maps ${JSON.stringify(name)} to it`}]);
        }
        weightMap.set(name, join(root, shard));
    }
    if (weightMap.size === 0) throw new InputError([{code: ErrorCodes.safetensors, file: indexFile, path: "weight_map", message: "is empty"}]);
    return {indexFile, single: null, weightMap};
}

// ---------------------------------------------------------------------------------------------
// Loading into the engine

/** Reports by model description and rank (ranks of one process may share a model object). */
const loadReports = new WeakMap<LlamaModel, Map<number, PretrainedLoadReport>>();

/**
 * @internal What the pretrained load at the engine's creation read on this rank (null when the
 * engine's model was not pretrained).
 */
export function pretrainedLoadReport(engine: {readonly model: LlamaModel; readonly rank: number}): PretrainedLoadReport | null {
    return loadReports.get(engine.model)?.get(engine.rank) ?? null;
}

/** A slice read into memory, written once every rank has read everything. */
interface PendingSlice {
    readonly index: number;
    readonly values: Float32Array;
}

/**
 * Loads `source` into the engine: every rank reads only its own slices (see the module comment). A
 * collective, called by ZeroEngine.create. Throws on every rank when any rank fails, having written
 * nothing.
 */
export async function loadPretrainedWeights(engine: CheckpointAccess, source: PretrainedSource): Promise<PretrainedLoadReport> {
    const prepared = await everyRankTries(engine, kTags.loadReady, {fn: "fromPretrained", target: source.dir, consequence: "nothing was loaded on any rank"}, () => readOwnSlices(engine, source));
    for (const {index, values} of prepared.writes) engine.writeSlice(index, "param", values);
    const reports = loadReports.get(engine.model) ?? new Map<number, PretrainedLoadReport>();
    loadReports.set(engine.model, reports.set(engine.rank, prepared.report));
    return prepared.report;
}

async function readOwnSlices(engine: CheckpointAccess, source: PretrainedSource): Promise<{writes: PendingSlice[]; report: PretrainedLoadReport}> {
    const handles = new Map<string, {handle: FileHandle; header: SafetensorsHeader}>();
    let headerBytes = 0;
    let tensorBytes = 0;
    let reads = 0;
    const fileOf = async (path: string): Promise<{handle: FileHandle; header: SafetensorsHeader}> => {
        let opened = handles.get(path);
        if (opened === undefined) {
            let handle: FileHandle;
            try {
                handle = await open(path, "r");
            } catch (error) {
                throw new InputError([{code: ErrorCodes.fileRead, file: path, message: `cannot read the file (${errnoOf(error)})`}]);
            }
            try {
                const header = await readSafetensorsHeader(handle, {path});
                headerBytes += header.dataOffset;
                opened = {handle, header};
                handles.set(path, opened);
            } catch (error) {
                await handle.close().catch(() => undefined);
                throw error;
            }
        }
        return opened;
    };
    const writes: PendingSlice[] = [];
    try {
        for (const [index, param] of engine.parameters.entries()) {
            const tensor = source.tensors[param.name];
            if (tensor === undefined) {
                // LoRA adapters and other parameters the engine adds start from its own init.
                if (param.name.includes(".lora_")) continue;
                throw new MixzError(ErrorCodes.modelConfig, `${source.dir}: the engine has parameter ${param.name}, which the pretrained model does not describe`, {category: "user"});
            }
            if (tensor.shape.length !== param.shape.length || tensor.shape.some((d, k) => d !== param.shape[k])) {
                throw new MixzError(ErrorCodes.modelConfig, `${tensor.file}: tensor ${JSON.stringify(tensor.name)} is [${tensor.shape.join(",")}], the engine's ${param.name} is [${param.shape.join(",")}]`, {category: "user"});
            }
            const {handle, header} = await fileOf(tensor.file);
            const info = header.tensors.get(tensor.name);
            if (info === undefined || info.dtype !== tensor.dtype || info.shape.length !== tensor.shape.length || info.shape.some((d, k) => d !== tensor.shape[k])) {
                throw new InputError([{code: ErrorCodes.safetensors, file: tensor.file, message: `tensor ${JSON.stringify(tensor.name)} changed since its header was read (now ${info === undefined ? "missing" : `${info.dtype} [${info.shape.join(",")}]`}, was ${tensor.dtype} [${tensor.shape.join(",")}])`}]);
            }
            const raw = await readTensor(handle, header, tensor.name, {from: param.sliceBegin, to: param.sliceBegin + param.sliceLength});
            reads += 1;
            tensorBytes += raw.byteLength;
            const values = raw instanceof Float32Array ? raw : await convertFloats(raw as Uint16Array, {from: tensor.dtype === "F16" ? "fp16" : "bf16", to: "fp32"});
            writes.push({index, values});
        }
    } finally {
        for (const {handle} of handles.values()) await handle.close().catch(() => undefined);
    }
    return {writes, report: {bytesRead: headerBytes + tensorBytes, tensorBytesRead: tensorBytes, reads, files: handles.size}};
}

// ---------------------------------------------------------------------------------------------
// Exporting

/** One tensor of an exported file: its name there, and how rank 0 computes it from gathered parameters. */
export interface GatheredTensor {
    readonly name: string;
    readonly shape: readonly number[];
    /** Computes the fp32 values; `gather(i)` is parameter i's full flattened tensor (a collective). */
    build(gather: (index: number) => Promise<Float32Array>): Promise<Float32Array>;
}

/** A text file written next to the safetensors file (after it). */
export interface ExtraFile {
    readonly name: string;
    readonly text: string;
}

/**
 * @internal Writes `fileName` (the tensors, in the engine's dtype) and `extras` into `dir`, gathering
 * tensors one at a time to rank 0 (see the module comment). A collective; `fn` names the caller in
 * errors.
 */
export async function writeGatheredFiles(
    engine: CheckpointAccess,
    fn: string,
    dir: string,
    fileName: string,
    tensors: readonly GatheredTensor[],
    extras: readonly ExtraFile[],
    metadata: Readonly<Record<string, string>>
): Promise<void> {
    const {rank, worldSize} = engine;
    for (const [r, p] of engine.parameters.entries()) {
        if (p.sliceBegin !== Math.min(rank * p.partition, p.numel) || p.partition * worldSize < p.numel) {
            throw new MixzError(ErrorCodes.engineState, `${fn}: parameter ${r} (${p.name}) is not partitioned as rank × partition`, {category: "platform"});
        }
    }

    // 1. Rank 0 prepares the staging directory.
    const exporting = {fn, target: dir, consequence: "nothing was written", ownError: (error: unknown) => writeError(dir, error)};
    let staging = "";
    await rootTries(engine, kTags.exportPrepared, exporting, async () => {
        const nonce = randomBytes(8).toString("hex");
        await mkdir(dir, {recursive: true});
        for (const entry of await readdir(dir)) {
            if (kStagingPattern.test(entry)) await rm(join(dir, entry), {recursive: true, force: true});
        }
        staging = join(dir, `.mixz-export.tmp-${nonce}`);
        await mkdir(staging);
    });

    // 2. Tensors travel one at a time, when rank 0's writer asks for them.
    const gatherParam = async (index: number): Promise<Float32Array> => {
        const p = engine.parameters[index]!;
        const input = new Float32Array(p.partition);
        input.set(engine.readSlice(index, "param"));
        const output = new Float32Array(p.partition * worldSize);
        // The all-gather moves bytes: the floats travel as their bit patterns.
        await engine.allGather(new Uint32Array(input.buffer), new Uint32Array(output.buffer), kTags.exportData);
        return output.subarray(0, p.numel);
    };
    let writeFailure: {error: unknown} | undefined;
    if (rank === 0) {
        const request = async (index: number): Promise<Float32Array> => {
            if (!Number.isInteger(index) || index < 0 || index >= engine.parameters.length) throw new RangeError(`${fn}: no parameter ${index}`);
            await engine.broadcast(Uint32Array.of(1, index), kTags.exportNext);
            return gatherParam(index);
        };
        const to = engine.dtype;
        const entries: SafetensorsTensor[] = tensors.map((t) => ({
            name: t.name,
            dtype: paramDTypeOf[to],
            shape: t.shape,
            data: (async function* () {
                const values = await t.build(request);
                yield to === "fp32" ? values : await convertFloats(values, {from: "fp32", to});
            })()
        }));
        try {
            await writeSafetensors(join(staging, fileName), entries, metadata);
            for (const extra of extras) await writeDurably(join(staging, extra.name), extra.text);
        } catch (error) {
            writeFailure = {error};
        }
        await engine.broadcast(Uint32Array.of(0, 0), kTags.exportNext);
    } else {
        const next = new Uint32Array(2);
        for (;;) {
            await engine.broadcast(next, kTags.exportNext);
            if (next[0] !== 1) break;
            await gatherParam(next[1]!);
        }
    }
    // Only rank 0 writes; the others learn here whether it did.
    await everyRankTries(engine, kTags.exportWritten, {
        ...exporting,
        cleanup: async () => {
            if (rank === 0) await rm(staging, {recursive: true, force: true});
        }
    }, async () => {
        if (writeFailure !== undefined) throw writeFailure.error;
    });

    // 3. Rank 0 publishes: the tensors first, the small files (config) last.
    await rootTries(engine, kTags.exportPublished, {...exporting, consequence: "the export did not complete"}, async () => {
        for (const name of [fileName, ...extras.map((e) => e.name)]) await rename(join(staging, name), join(dir, name));
        await syncDirectory(dir);
        await rm(staging, {recursive: true, force: true});
    });
}

/** Folds what the engine adds to a base weight (LoRA) into the exported tensor; see peftAdapter.ts. */
export type ExportFold = (param: NativeParamInfo, index: number) => GatheredTensor["build"] | null;

/**
 * engine.exportPretrained(dir): a consolidated Hugging Face model (config.json + model.safetensors
 * in the engine's dtype, Hugging Face names, LM head always stored). LoRA adapters are left out;
 * `fold` (lora.merge) folds them into their base weights. A collective.
 */
export async function exportPretrained(engine: CheckpointAccess, dir: string, fold?: ExportFold, fn = "exportPretrained"): Promise<void> {
    if (typeof dir !== "string" || dir === "") {
        throw new InputError([{code: ErrorCodes.fileWrite, path: fn, message: `dir must be a non-empty path string, got ${JSON.stringify(dir) ?? typeof dir}`}]);
    }
    const tensors: GatheredTensor[] = [];
    for (const [index, param] of engine.parameters.entries()) {
        if (param.name.includes(".lora_")) continue;
        const build = fold?.(param, index) ?? ((gather: (i: number) => Promise<Float32Array>) => gather(index));
        tensors.push({name: param.name, shape: param.shape, build});
    }
    const config = hfConfigOf(engine.model, engine.dtype);
    await writeGatheredFiles(engine, fn, dir, pretrainedWeightsName, tensors, [{name: pretrainedConfigName, text: `${JSON.stringify(config, null, 2)}\n`}], {format: "pt"});
}

/** config.json for `model`: the pretrained config's other keys kept, the architecture's rewritten. */
export function hfConfigOf(model: LlamaModel, dtype: NativeModelDType): Record<string, unknown> {
    const c = model.config;
    const base: Record<string, unknown> = {...(model.pretrained?.hfConfig ?? {})};
    // A Mistral model stays one (its sliding_window, kept, is at least every sequence trained on).
    // A model with q/k/v biases is a Qwen2 (its use_sliding_window, false, and the window keys that
    // then mean nothing are kept); a Qwen2 config has no attention_bias or mlp_bias.
    const qwen2 = c.attentionBias;
    const mistral = !qwen2 && base["model_type"] === "mistral";
    for (const key of ["dtype", "head_dim", "rope_scaling", "rope_parameters", "pretraining_tp", "quantization_config", "attention_bias", "mlp_bias"]) delete base[key];
    if (!mistral && !qwen2) delete base["sliding_window"];
    if (!qwen2) {
        for (const key of ["use_sliding_window", "max_window_layers", "layer_types"]) delete base[key];
    }
    return {
        ...base,
        architectures: [mistral ? "MistralForCausalLM" : qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"],
        model_type: mistral ? "mistral" : qwen2 ? "qwen2" : "llama",
        vocab_size: c.vocabSize,
        hidden_size: c.hidden,
        intermediate_size: c.intermediate,
        num_hidden_layers: c.layers,
        num_attention_heads: c.heads,
        num_key_value_heads: c.kvHeads,
        head_dim: c.hidden / c.heads,
        max_position_embeddings: Math.max(c.maxSeqLen, typeof base["max_position_embeddings"] === "number" ? base["max_position_embeddings"] : 0),
        rope_theta: c.ropeTheta,
        rope_scaling: hfRopeScalingOf(c.ropeScaling),
        rms_norm_eps: c.rmsEps,
        initializer_range: c.initStd,
        hidden_act: "silu",
        ...(qwen2 ? {use_sliding_window: false} : {attention_bias: false, mlp_bias: false}),
        // The engine's LM head is its own parameter (a tied model's was loaded from the embedding).
        tie_word_embeddings: false,
        torch_dtype: torchDTypeOf[dtype]
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

async function listDirectory(dir: string): Promise<string[]> {
    try {
        if (!(await stat(dir)).isDirectory()) throw Object.assign(new Error("not a directory"), {code: "ENOTDIR"});
        return await readdir(dir);
    } catch (error) {
        throw new InputError([{code: ErrorCodes.fileRead, file: dir, message: `not a model directory (${errnoOf(error)})`}]);
    }
}

async function readText(path: string): Promise<string> {
    try {
        return await readFile(path, "utf8");
    } catch (error) {
        throw new InputError([{code: ErrorCodes.fileRead, file: path, message: `cannot read the file (${errnoOf(error)})`}]);
    }
}

/** @internal */
export function parseJsonObject(path: string, text: string, code: string): Record<string, unknown> {
    let json: unknown;
    try {
        json = JSON.parse(text);
    } catch (error) {
        throw new InputError([{code, file: path, message: `not valid JSON (${(error as Error).message})`}]);
    }
    if (typeof json !== "object" || json === null || Array.isArray(json)) throw new InputError([{code, file: path, message: "not a JSON object"}]);
    return json as Record<string, unknown>;
}

function describeEntries(entries: readonly string[]): string {
    if (entries.length === 0) return "no files";
    const shown = entries.slice(0, 8).join(", ");
    return entries.length > 8 ? `${shown}, … (${entries.length} entries)` : shown;
}




import {ErrorCodes, InputError, type Problem} from "@mixz/protocol";
import type {NativeLlamaDims} from "../binding/AddonEngineTypes.js";
import type {PretrainedSource} from "../formats/pretrained.js";

/**
 * Rotary scaling, as Hugging Face's config.json rope_scaling (its attention scaling is 1 for both
 * kinds, so only the inverse frequencies change). linear: every frequency divided by `factor`.
 * llama3 (LLaMA 3.1/3.2): with wavelength 2π/f, wavelengths above originalMaxPositions /
 * lowFreqFactor are divided by `factor`, those below originalMaxPositions / highFreqFactor kept,
 * and those between blended smoothly. The native engine computes the frequencies (in double, for
 * the CPU and CUDA backends alike).
 */
export type LlamaRopeScaling =
    | {readonly type: "linear"; readonly factor: number}
    | {
          readonly type: "llama3";
          readonly factor: number;
          readonly lowFreqFactor: number;
          readonly highFreqFactor: number;
          readonly originalMaxPositions: number;
      };

/** A LLaMA-style model configuration (the names of DESIGN.md §3; Hugging Face's in comments). */
export interface LlamaConfig {
    /** vocab_size */
    readonly vocabSize: number;
    /** hidden_size */
    readonly hidden: number;
    /** num_hidden_layers */
    readonly layers: number;
    /** num_attention_heads */
    readonly heads: number;
    /** num_key_value_heads; default `heads` (no grouping). */
    readonly kvHeads?: number;
    /** intermediate_size */
    readonly intermediate: number;
    /** max_position_embeddings */
    readonly maxSeqLen: number;
    /** rope_theta; default 10000. */
    readonly ropeTheta?: number;
    /** rope_scaling; default null (plain RoPE). */
    readonly ropeScaling?: LlamaRopeScaling | null;
    /**
     * Biases on the q, k and v projections (Qwen2: model.layers.N.self_attn.{q,k,v}_proj.bias; none
     * on o_proj or the MLP); default false. They start at 0 and train as their weights do.
     */
    readonly attentionBias?: boolean;
    /** rms_norm_eps; default 1e-6. */
    readonly rmsEps?: number;
    /** initializer_range: the standard deviation of the normal init of matrices; default 0.02. */
    readonly initStd?: number;
    /** Seeds the initial weights; the same seed gives the same model on any number of ranks. Default 0. */
    readonly seed?: number;
}

/** A model description handed to initialize(): nothing is allocated until then. */
export interface LlamaModel {
    readonly kind: "llama";
    readonly config: Required<LlamaConfig>;
    /** The shapes every rank agrees on, for the engine's descriptor. */
    readonly dims: NativeLlamaDims;
    /**
     * Set by models.llama.fromPretrained (pretrained.ts): where the weights are. The engine loads
     * them when it is created, each rank reading only its own slices.
     */
    readonly pretrained?: PretrainedSource;
}

const maxInt = 2 ** 31 - 1;

/**
 * Describes a LLaMA-family decoder (RMSNorm, rotary attention with grouped KV heads, optional q/k/v
 * biases, SwiGLU MLP, untied LM head) with Hugging Face parameter names. Throws InputError (MIXZ_ERR_MODEL_CONFIG)
 * naming every field that is wrong.
 */
export function llama(config: LlamaConfig): LlamaModel {
    const problems: Problem[] = [];
    const bad = (path: string, message: string): void => {
        problems.push({code: ErrorCodes.modelConfig, path: `models.llama: ${path}`, message});
    };
    if (typeof config !== "object" || config === null) {
        throw new InputError([{code: ErrorCodes.modelConfig, message: "models.llama(config) needs a configuration object"}]);
    }
    const integer = (key: keyof LlamaConfig, value: unknown, min: number, max = maxInt): number => {
        if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
            bad(key, `must be an integer in [${min}, ${max}], got ${JSON.stringify(value) ?? String(value)}`);
            return min;
        }
        return value;
    };
    const positive = (key: keyof LlamaConfig, value: unknown): number => {
        if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
            bad(key, `must be a positive number, got ${JSON.stringify(value) ?? String(value)}`);
            return 1;
        }
        return value;
    };
    const known = new Set(["vocabSize", "hidden", "layers", "heads", "kvHeads", "intermediate", "maxSeqLen", "ropeTheta", "ropeScaling", "attentionBias", "rmsEps", "initStd", "seed"]);
    for (const key of Object.keys(config)) {
        if (!known.has(key)) bad(key, `unknown field (known: ${[...known].join(", ")})`);
    }
    const vocabSize = integer("vocabSize", config.vocabSize, 1);
    const hidden = integer("hidden", config.hidden, 2);
    const layers = integer("layers", config.layers, 1, 65_536);
    const heads = integer("heads", config.heads, 1, 65_536);
    const kvHeads = integer("kvHeads", config.kvHeads ?? config.heads, 1, 65_536);
    const intermediate = integer("intermediate", config.intermediate, 1);
    const maxSeqLen = integer("maxSeqLen", config.maxSeqLen, 1, 1 << 24);
    const ropeTheta = positive("ropeTheta", config.ropeTheta ?? 10_000);
    const rmsEps = positive("rmsEps", config.rmsEps ?? 1e-6);
    const initStd = positive("initStd", config.initStd ?? 0.02);
    const seed = integer("seed", config.seed ?? 0, 0, Number.MAX_SAFE_INTEGER);
    const ropeScaling = ropeScalingOf(config.ropeScaling ?? null, bad);
    const attentionBias = config.attentionBias ?? false;
    if (typeof attentionBias !== "boolean") bad("attentionBias", `must be true or false, got ${JSON.stringify(attentionBias) ?? String(attentionBias)}`);
    if (problems.length === 0) {
        if (hidden % heads !== 0) bad("heads", `${heads} heads do not divide hidden ${hidden}`);
        else if ((hidden / heads) % 2 !== 0) bad("heads", `the head dimension hidden/heads = ${hidden / heads} must be even for rotary embeddings`);
        if (heads % kvHeads !== 0) bad("kvHeads", `${kvHeads} KV heads do not divide ${heads} attention heads`);
    }
    if (problems.length > 0) throw new InputError(problems);
    return {
        kind: "llama",
        config: {vocabSize, hidden, layers, heads, kvHeads, intermediate, maxSeqLen, ropeTheta, ropeScaling, attentionBias, rmsEps, initStd, seed},
        dims: {
            vocab: vocabSize, hidden, layers, heads, kvHeads, intermediate, maxSeq: maxSeqLen, ropeTheta, rmsEps,
            ropeScaling: ropeScaling?.type ?? "none",
            // The native defaults where a kind does not use a number (it is sent, not read).
            ropeFactor: ropeScaling?.factor ?? 1,
            ropeLowFreqFactor: ropeScaling?.type === "llama3" ? ropeScaling.lowFreqFactor : 1,
            ropeHighFreqFactor: ropeScaling?.type === "llama3" ? ropeScaling.highFreqFactor : 4,
            ropeOriginalMaxSeq: ropeScaling?.type === "llama3" ? ropeScaling.originalMaxPositions : 8192,
            attentionBias
        }
    };
}

/** Checks ropeScaling (null: none) and returns a copy holding only its kind's fields. */
function ropeScalingOf(value: unknown, bad: (path: string, message: string) => void): LlamaRopeScaling | null {
    if (value === null) return null;
    if (typeof value !== "object" || Array.isArray(value)) {
        bad("ropeScaling", `must be null, {type: "linear", factor} or {type: "llama3", factor, lowFreqFactor, highFreqFactor, originalMaxPositions}, got ${JSON.stringify(value) ?? String(value)}`);
        return null;
    }
    const v = value as Record<string, unknown>;
    const keys = v["type"] === "linear" ? ["type", "factor"] : v["type"] === "llama3" ? ["type", "factor", "lowFreqFactor", "highFreqFactor", "originalMaxPositions"] : null;
    if (keys === null) {
        bad("ropeScaling.type", `must be "linear" or "llama3", got ${JSON.stringify(v["type"]) ?? "nothing"}`);
        return null;
    }
    for (const key of Object.keys(v)) {
        if (!keys.includes(key)) bad(`ropeScaling.${key}`, `unknown field for ${JSON.stringify(v["type"])} scaling (known: ${keys.join(", ")})`);
    }
    const positive = (key: string): number => {
        const x = v[key];
        if (typeof x !== "number" || !Number.isFinite(x) || x <= 0) {
            bad(`ropeScaling.${key}`, `must be a positive number, got ${JSON.stringify(x) ?? "nothing"}`);
            return 1;
        }
        return x;
    };
    const factor = positive("factor");
    if (v["type"] === "linear") return {type: "linear", factor};
    const lowFreqFactor = positive("lowFreqFactor");
    const highFreqFactor = positive("highFreqFactor");
    const originalMaxPositions = positive("originalMaxPositions");
    // The blend between the two wavelength bounds divides by their difference.
    if (highFreqFactor <= lowFreqFactor) bad("ropeScaling.highFreqFactor", `must be above lowFreqFactor ${lowFreqFactor}, got ${highFreqFactor}`);
    return {type: "llama3", factor, lowFreqFactor, highFreqFactor, originalMaxPositions};
}

/** Parameter count of a model (the untied embedding and LM head counted separately; q/k/v biases with attentionBias). */
export function llamaParameterCount(model: LlamaModel): number {
    const {vocabSize: v, hidden: h, layers, heads, kvHeads, intermediate: i, attentionBias} = model.config;
    const kv = (h / heads) * kvHeads;
    const perLayer = 2 * h * h + 2 * kv * h + 3 * i * h + 2 * h + (attentionBias ? h + 2 * kv : 0);
    return 2 * v * h + layers * perLayer + h;
}

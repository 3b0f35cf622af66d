/**
 * LoRA adapters in Hugging Face PEFT's layout, and merging them into an exported model.
 *
 * An adapter directory (what PEFT's `save_pretrained` writes, and `PeftModel.from_pretrained` reads):
 *   adapter_config.json         {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r", "lora_alpha",
 *                                "lora_dropout", "target_modules": [...], "bias": "none",
 *                                "fan_in_fan_out": false, "inference_mode": true,
 *                                "base_model_name_or_path", ...}
 *   adapter_model.safetensors   base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_{A|B}.weight
 *                               A: [r, in], B: [out, r], in the engine's dtype
 * The tensor names are the engine's parameter names behind PEFT's "base_model.model." prefix.
 *
 * Save and merge gather one tensor at a time to rank 0, which writes through a staging directory
 * (pretrained.ts, writeGatheredFiles). Load checks the config against the engine's LoRA settings
 * (r, lora_alpha, the target modules; the dropout only shapes training, so it may differ) and every
 * tensor against the engine's adapters (the same names, shapes, a float dtype, nothing else), on
 * every rank, before any rank writes its slices: a wrong adapter changes nothing.
 *
 * merge exports the model as exportPretrained does with each target weight replaced by
 * W + (lora_alpha / r)·B·A — the engine's forward, y = x·Wᵀ + (alpha/r)·(x·Aᵀ)·Bᵀ, folded —
 * computed in fp32 on rank 0 from the gathered tensors and rounded once to the model dtype.
 */
import {open, readFile} from "node:fs/promises";
import type {FileHandle} from "node:fs/promises";
import {join, resolve} from "node:path";

import {ErrorCodes, InputError, MixzError, type Problem} from "@mixz/protocol";

import type {NativeParamInfo} from "../binding/AddonEngineTypes.js";
import type {CheckpointAccess} from "../train/checkpoint.js";
import {exportPretrained, parseJsonObject, writeGatheredFiles, type ExportFold, type GatheredTensor} from "./pretrained.js";
import {convertFloats} from "../quant/quantize.js";
import {readSafetensorsHeader, readTensor, type SafetensorsHeader} from "./safetensors.js";
import type {ZeroEngine} from "../train/ZeroEngine.js";
import {CollectiveTags} from "../comm/collectiveTags.js";
import {everyRankTries} from "../comm/ranksAgree.js";

/** The LoRA settings of an engine (engine.lora after lora.apply). */
export interface LoraSettings {
    readonly r: number;
    readonly alpha: number;
    readonly dropout: number;
    readonly targetModules: readonly string[];
}

export const peftConfigName = "adapter_config.json";
export const peftWeightsName = "adapter_model.safetensors";
/** What PEFT puts before a model's parameter name. */
export const peftTensorPrefix = "base_model.model.";

/** The linears of a decoder layer LoRA can target, and the block each lives in. */
export const loraModuleBlocks: Readonly<Record<string, "self_attn" | "mlp">> = {
    q_proj: "self_attn",
    k_proj: "self_attn",
    v_proj: "self_attn",
    o_proj: "self_attn",
    gate_proj: "mlp",
    up_proj: "mlp",
    down_proj: "mlp"
};

const kLoraParam = /^(model\.layers\.\d+\.(?:self_attn|mlp)\.[a-z_]+)\.lora_(A|B)\.weight$/;

/** The PEFT name of an engine parameter. */
export function peftTensorName(parameter: string): string {
    return `${peftTensorPrefix}${parameter}`;
}

/** adapter_config.json for `lora`; `baseModel` is the pretrained directory, if any. */
export function peftAdapterConfig(lora: LoraSettings, baseModel: string | null): Record<string, unknown> {
    return {
        peft_type: "LORA",
        task_type: "CAUSAL_LM",
        base_model_name_or_path: baseModel,
        revision: null,
        r: lora.r,
        lora_alpha: lora.alpha,
        lora_dropout: lora.dropout,
        target_modules: [...lora.targetModules].sort(),
        bias: "none",
        fan_in_fan_out: false,
        inference_mode: true,
        init_lora_weights: true,
        modules_to_save: null,
        layers_to_transform: null,
        layers_pattern: null,
        rank_pattern: {},
        alpha_pattern: {},
        use_rslora: false,
        use_dora: false
    };
}

/**
 * Problems of an adapter_config.json for an engine with `lora` (MIXZ_ERR_PEFT_ADAPTER, naming the
 * file and key); empty when it fits.
 */
export function checkPeftAdapterConfig(path: string, json: Record<string, unknown>, lora: LoraSettings): Problem[] {
    const problems: Problem[] = [];
    const bad = (key: string, message: string): void => {
        problems.push({code: ErrorCodes.peftAdapter, file: path, path: key, message});
    };
    if (json["peft_type"] !== "LORA") bad("peft_type", `mixz loads LoRA adapters ("LORA"), got ${JSON.stringify(json["peft_type"])}`);
    const task = json["task_type"];
    if (task !== undefined && task !== null && task !== "CAUSAL_LM") bad("task_type", `must be "CAUSAL_LM", got ${JSON.stringify(task)}`);
    if (json["r"] !== lora.r) bad("r", `the adapter has rank ${JSON.stringify(json["r"])}, the engine's LoRA has r = ${lora.r}`);
    if (json["lora_alpha"] !== lora.alpha) bad("lora_alpha", `the adapter has lora_alpha ${JSON.stringify(json["lora_alpha"])}, the engine's LoRA has alpha = ${lora.alpha}`);
    const targets = json["target_modules"];
    const mine = [...lora.targetModules].sort();
    if (!Array.isArray(targets) || !targets.every((t) => typeof t === "string")) {
        bad("target_modules", `must be a list of module names (a regular expression is not supported), got ${JSON.stringify(targets)}`);
    } else {
        const theirs = [...new Set(targets as string[])].sort();
        if (theirs.join(",") !== mine.join(",")) bad("target_modules", `the adapter targets [${theirs.join(", ")}], the engine's LoRA targets [${mine.join(", ")}]`);
    }
    const bias = json["bias"] ?? "none";
    if (bias !== "none") bad("bias", `only "none" is supported, got ${JSON.stringify(bias)}`);
    for (const key of ["fan_in_fan_out", "use_rslora", "use_dora"]) {
        if (json[key] !== undefined && json[key] !== null && json[key] !== false) bad(key, `must be false (mixz's LoRA is y += (alpha/r)·x·Aᵀ·Bᵀ), got ${JSON.stringify(json[key])}`);
    }
    for (const key of ["rank_pattern", "alpha_pattern"]) {
        const value = json[key];
        if (value !== undefined && value !== null && !(typeof value === "object" && Object.keys(value).length === 0)) bad(key, `per-module ranks and alphas are not supported, got ${JSON.stringify(value)}`);
    }
    for (const key of ["layers_to_transform", "modules_to_save"]) {
        if (json[key] !== undefined && json[key] !== null) bad(key, `must be null (every layer adapted, no extra modules), got ${JSON.stringify(json[key])}`);
    }
    return problems;
}

/** The engine's LoRA settings, or an error saying lora.apply comes first. */
function loraOf(engine: ZeroEngine, fn: string): LoraSettings {
    const value = (engine as unknown as {readonly lora?: LoraSettings | null}).lora;
    if (value === undefined || value === null) {
        throw new MixzError(ErrorCodes.engineState, `lora.${fn}(): the engine has no LoRA adapters; call lora.apply(model, {...}) after initialize() first`, {category: "user"});
    }
    return value;
}

function runCollective<T>(engine: ZeroEngine, fn: string, body: (access: CheckpointAccess) => Promise<T>): Promise<T> {
    return (engine as unknown as {runCollective(fn: string, body: (access: CheckpointAccess) => Promise<T>): Promise<T>}).runCollective(fn, body);
}

function checkDir(fn: string, dir: unknown): asserts dir is string {
    if (typeof dir !== "string" || dir === "") {
        throw new InputError([{code: ErrorCodes.peftAdapter, path: `lora.${fn}`, message: `dir must be a non-empty path string, got ${JSON.stringify(dir) ?? typeof dir}`}]);
    }
}

/** The engine's LoRA parameters, by index. */
function loraParameters(parameters: readonly NativeParamInfo[]): {index: number; param: NativeParamInfo}[] {
    return [...parameters.entries()].flatMap(([index, param]) => (kLoraParam.test(param.name) ? [{index, param}] : []));
}

/**
 * lora.savePeftAdapter(engine, dir): adapter_config.json and adapter_model.safetensors (PEFT's
 * names, the engine's dtype), written atomically by rank 0. A collective.
 */
export async function savePeftAdapter(engine: ZeroEngine, dir: string): Promise<void> {
    checkDir("savePeftAdapter", dir);
    const lora = loraOf(engine, "savePeftAdapter");
    await runCollective(engine, "savePeftAdapter", async (access) => {
        const adapters = loraParameters(access.parameters);
        if (adapters.length === 0) throw new MixzError(ErrorCodes.engineState, "lora.savePeftAdapter(): the engine has no lora_A/lora_B parameters", {category: "platform"});
        const tensors: GatheredTensor[] = adapters.map(({index, param}) => ({name: peftTensorName(param.name), shape: param.shape, build: (gather) => gather(index)}));
        const config = peftAdapterConfig(lora, access.model.pretrained?.dir ?? null);
        await writeGatheredFiles(access, "savePeftAdapter", resolve(dir), peftWeightsName, tensors, [{name: peftConfigName, text: `${JSON.stringify(config, null, 2)}\n`}], {format: "pt"});
    });
}

/**
 * lora.loadPeftAdapter(engine, dir): checks the adapter against the engine (MIXZ_ERR_PEFT_ADAPTER,
 * MIXZ_ERR_SAFETENSORS naming the file) on every rank, then writes each rank's slices of every
 * lora_A/lora_B. A collective; an error on any rank leaves every engine as it was.
 */
export async function loadPeftAdapter(engine: ZeroEngine, dir: string): Promise<void> {
    checkDir("loadPeftAdapter", dir);
    const lora = loraOf(engine, "loadPeftAdapter");
    await runCollective(engine, "loadPeftAdapter", async (access) => {
        const writes = await everyRankTries(access, CollectiveTags.peftAdapter.loadReady, {fn: "lora.loadPeftAdapter", target: dir, consequence: "nothing was loaded on any rank"},
            () => readAdapterSlices(access, resolve(dir), lora));
        for (const {index, values} of writes) access.writeSlice(index, "param", values);
    });
}

async function readAdapterSlices(access: CheckpointAccess, dir: string, lora: LoraSettings): Promise<{index: number; values: Float32Array}[]> {
    const configPath = join(dir, peftConfigName);
    let text: string;
    try {
        text = await readFile(configPath, "utf8");
    } catch (error) {
        throw new InputError([{code: ErrorCodes.fileRead, file: configPath, message: `cannot read the adapter config (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`}]);
    }
    const problems = checkPeftAdapterConfig(configPath, parseJsonObject(configPath, text, ErrorCodes.peftAdapter), lora);
    if (problems.length > 0) throw new InputError(problems);

    const path = join(dir, peftWeightsName);
    let handle: FileHandle;
    try {
        handle = await open(path, "r");
    } catch (error) {
        throw new InputError([{code: ErrorCodes.fileRead, file: path, message: `cannot read the adapter weights (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`}]);
    }
    try {
        const header = await readSafetensorsHeader(handle, {path});
        const adapters = loraParameters(access.parameters);
        checkAdapterTensors(header, adapters.map(({param}) => param));
        const writes: {index: number; values: Float32Array}[] = [];
        for (const {index, param} of adapters) {
            const name = peftTensorName(param.name);
            const dtype = header.tensors.get(name)!.dtype;
            const raw = await readTensor(handle, header, name, {from: param.sliceBegin, to: param.sliceBegin + param.sliceLength});
            const values = raw instanceof Float32Array ? raw : await convertFloats(raw as Uint16Array, {from: dtype === "F16" ? "fp16" : "bf16", to: "fp32"});
            writes.push({index, values});
        }
        return writes;
    } finally {
        await handle.close().catch(() => undefined);
    }
}

/** The adapter file must hold exactly the engine's adapters: names, shapes, float dtypes. */
export function checkAdapterTensors(header: SafetensorsHeader, adapters: readonly Pick<NativeParamInfo, "name" | "shape">[]): void {
    const problems: Problem[] = [];
    const bad = (message: string): void => {
        if (problems.length < 12) problems.push({code: ErrorCodes.peftAdapter, file: header.path, message});
    };
    const expected = new Set<string>();
    for (const param of adapters) {
        const name = peftTensorName(param.name);
        expected.add(name);
        const info = header.tensors.get(name);
        if (info === undefined) {
            bad(`tensor ${JSON.stringify(name)} is missing: the adapter was not made for this model's LoRA (${param.name} [${param.shape.join(",")}])`);
        } else if (info.dtype !== "F32" && info.dtype !== "F16" && info.dtype !== "BF16") {
            bad(`tensor ${JSON.stringify(name)} is ${info.dtype}; adapters are F32, F16 or BF16`);
        } else if (info.shape.length !== param.shape.length || info.shape.some((d, k) => d !== param.shape[k])) {
            bad(`tensor ${JSON.stringify(name)} has shape [${info.shape.join(",")}], the engine's ${param.name} is [${param.shape.join(",")}] (an adapter for another model or rank)`);
        }
    }
    for (const name of header.tensors.keys()) {
        if (!expected.has(name)) bad(`unexpected tensor ${JSON.stringify(name)}: the engine has no such adapter (an adapter for another model or other target modules)`);
    }
    if (problems.length > 0) throw new InputError(problems);
}

/**
 * lora.merge(engine, dir): exportPretrained with (alpha/r)·B·A folded into each target weight;
 * the adapters themselves are not written. A collective.
 */
export async function mergeLora(engine: ZeroEngine, dir: string): Promise<void> {
    checkDir("merge", dir);
    const lora = loraOf(engine, "merge");
    await runCollective(engine, "merge", async (access) => {
        const byName = new Map(access.parameters.map((p, i) => [p.name, i]));
        const scale = lora.alpha / lora.r;
        const fold: ExportFold = (param, index) => {
            const stem = param.name.replace(/\.weight$/, "");
            const a = byName.get(`${stem}.lora_A.weight`);
            const b = byName.get(`${stem}.lora_B.weight`);
            if (a === undefined || b === undefined) return null;
            const [out, inner] = param.shape as [number, number];
            return async (gather) => {
                const w = Float32Array.from(await gather(index));
                const A = await gather(a);
                const B = await gather(b);
                foldLora(w, A, B, out, inner, lora.r, scale);
                return w;
            };
        };
        await exportPretrained(access, resolve(dir), fold, "lora.merge");
    });
}

/** w[out, in] += scale · B[out, r] · A[r, in], in place. */
export function foldLora(w: Float32Array, A: Float32Array, B: Float32Array, out: number, inner: number, r: number, scale: number): void {
    if (w.length !== out * inner || A.length !== r * inner || B.length !== out * r) {
        throw new RangeError(`foldLora: W [${out},${inner}] needs A [${r},${inner}] and B [${out},${r}], got ${w.length}, ${A.length}, ${B.length} elements`);
    }
    const row = new Float64Array(inner);
    for (let o = 0; o < out; o++) {
        row.fill(0);
        for (let j = 0; j < r; j++) {
            const coefficient = B[o * r + j]!;
            if (coefficient === 0) continue;
            const base = j * inner;
            for (let k = 0; k < inner; k++) row[k]! += coefficient * A[base + k]!;
        }
        const base = o * inner;
        for (let k = 0; k < inner; k++) w[base + k]! += scale * row[k]!;
    }
}

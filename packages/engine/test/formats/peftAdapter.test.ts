// PEFT adapters: adapter_config.json and tensor names as PEFT writes them, the checks that refuse
// an adapter made for another model or other LoRA settings (changing nothing), save → load giving
// the same parameters and losses on 2 ranks, and merge folding (alpha/r)·B·A into the base weights.
import assert from "node:assert/strict";
import {execFileSync} from "node:child_process";
import {mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";
import {fileURLToPath} from "node:url";

import {resolveConfigObject} from "@mixz/config";

import {
    checkPeftAdapterConfig,
    foldLora,
    fromPretrainedLlama,
    loadPeftAdapter,
    mergeLora,
    peftAdapterConfig,
    peftTensorName,
    savePeftAdapter,
    ZeroEngine,
    type Batch,
    type LlamaConfig,
    type LlamaModel
} from "@mixz/engine";
import {writeHfModel} from "../helpers/hfModel.js";
import {inProcessWorld} from "../helpers/inProcessWorld.js";
import {rejectsWith} from "../helpers/rejectsWith.js";

const validator = fileURLToPath(new URL("../helpers/validate_safetensors.py", import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), "mixz-peft-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

const tiny: LlamaConfig = {vocabSize: 19, hidden: 12, layers: 2, heads: 3, kvHeads: 1, intermediate: 10, maxSeqLen: 8};
const settings = {r: 4, alpha: 8, dropout: 0, targetModules: ["q_proj", "v_proj", "down_proj"]};
let jobs = 0;
let dirs = 0;
const fresh = (label: string): string => join(scratch, `${label}-${dirs++}`);

type LoraEngine = ZeroEngine & {applyLora(options: {r: number; alpha?: number; targetModules?: readonly string[]; seed?: number}): void};

async function engines(model: LlamaModel, n: number, lora: {r: number; alpha: number; targetModules: readonly string[]; seed?: number} | null = settings): Promise<LoraEngine[]> {
    const comms = await inProcessWorld(n, {jobId: `peft-${process.pid}-${jobs++}`});
    const config = resolveConfigObject({
        train_micro_batch_size_per_gpu: 2,
        optimizer: {type: "AdamW", params: {lr: 0.05}},
        zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0}
    }, {worldSize: n}).config;
    const created = (await Promise.all(comms.map((communicator) => ZeroEngine.create({model, config, communicator, timeoutMs: 20_000})))) as LoraEngine[];
    if (lora !== null) for (const engine of created) engine.applyLora(lora);
    return created;
}

function batch(seed: number): Batch {
    const ids = new Int32Array(10).map((_, i) => (seed * 5 + i * 7) % tiny.vocabSize);
    return {inputIds: ids, labels: ids.slice(), shape: [2, 5]};
}

/** Sets every rank's slices of the LoRA parameters to distinct non-zero values (as training would). */
function perturbAdapters(ranks: readonly ZeroEngine[], seed: number): void {
    for (const engine of ranks) {
        engine.parameters.forEach((p, i) => {
            if (!p.name.includes(".lora_")) return;
            const values = Float32Array.from({length: p.sliceLength}, (_, k) => 0.1 * Math.sin(seed + i * 1.7 + (p.sliceBegin + k) * 0.37));
            engine.writeSlice(i, "param", values);
        });
    }
}

async function train(ranks: readonly ZeroEngine[], steps: number): Promise<void> {
    for (let step = 0; step < steps; step++) {
        await Promise.all(ranks.map(async (engine, r) => {
            const loss = await engine.forward(batch(step * 2 + r));
            await engine.backward(loss);
            await engine.step();
        }));
    }
}

function snapshot(ranks: readonly ZeroEngine[]): Map<string, Float32Array> {
    const out = new Map<string, Float32Array>();
    ranks[0]!.parameters.forEach((p, i) => {
        const full = new Float32Array(p.numel);
        for (const engine of ranks) full.set(engine.readSlice(i, "param"), engine.parameters[i]!.sliceBegin);
        out.set(p.name, full);
    });
    return out;
}

const losses = async (ranks: readonly ZeroEngine[]): Promise<number[]> => Promise.all(ranks.map(async (e, r) => (await e.evaluate(batch(11 + r))).value));


describe("PEFT adapter format", () => {
    it("adapter_config.json has PEFT's fields; tensor names carry PEFT's prefix", () => {
        const config = peftAdapterConfig(settings, "/models/base");
        assert.equal(config["peft_type"], "LORA");
        assert.equal(config["task_type"], "CAUSAL_LM");
        assert.equal(config["r"], 4);
        assert.equal(config["lora_alpha"], 8);
        assert.equal(config["lora_dropout"], 0);
        assert.deepEqual(config["target_modules"], ["down_proj", "q_proj", "v_proj"]);
        assert.equal(config["bias"], "none");
        assert.equal(config["fan_in_fan_out"], false);
        assert.equal(config["inference_mode"], true);
        assert.equal(config["base_model_name_or_path"], "/models/base");
        assert.equal(peftTensorName("model.layers.3.self_attn.q_proj.lora_A.weight"), "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight");
        assert.deepEqual(checkPeftAdapterConfig("a.json", config, settings), []);
    });

    it("configs for other LoRA settings: each difference named", () => {
        const base = peftAdapterConfig(settings, null);
        const messages = (changes: Record<string, unknown>): string =>
            checkPeftAdapterConfig("adapter_config.json", {...base, ...changes}, settings).map((p) => `${p.path}: ${p.message}`).join("\n");
        assert.match(messages({r: 8}), /^r: the adapter has rank 8, the engine's LoRA has r = 4$/);
        assert.match(messages({lora_alpha: 16}), /lora_alpha: the adapter has lora_alpha 16/);
        assert.match(messages({target_modules: ["q_proj", "v_proj"]}), /target_modules: the adapter targets \[q_proj, v_proj\], the engine's LoRA targets \[down_proj, q_proj, v_proj\]/);
        assert.match(messages({target_modules: ".*proj"}), /a regular expression is not supported/);
        assert.match(messages({peft_type: "IA3"}), /peft_type: mixz loads LoRA adapters/);
        assert.match(messages({use_dora: true, bias: "all"}), /bias: only "none"[\s\S]*use_dora: must be false/);
        assert.equal(messages({lora_dropout: 0.1}), "", "dropout only shapes training");
    });

    it("foldLora adds scale·B·A", () => {
        const w = Float32Array.of(1, 2, 3, 4, 5, 6); // [2, 3]
        const A = Float32Array.of(1, 0, 2); // [1, 3]
        const B = Float32Array.of(3, -1); // [2, 1]
        foldLora(w, A, B, 2, 3, 1, 0.5);
        assert.deepEqual(Array.from(w), [2.5, 2, 6, 3.5, 5, 5]);
    });
});

describe("PEFT adapters on the engine (2 ranks)", () => {
    it("save → load into fresh engines: the same adapters and losses; the files validate; merge equals the adapted model", async () => {
        const hf = await writeHfModel(fresh("base"), {config: tiny, dtype: "BF16"});
        const model = await fromPretrainedLlama(hf.dir);
        const trained = await engines(model, 2);
        perturbAdapters(trained, 1);
        await train(trained, 2);
        const adapter = fresh("adapter");
        await Promise.all(trained.map((engine) => savePeftAdapter(engine, adapter)));
        assert.deepEqual(readdirSync(adapter).sort(), ["adapter_config.json", "adapter_model.safetensors"]);
        const config = JSON.parse(readFileSync(join(adapter, "adapter_config.json"), "utf8")) as Record<string, unknown>;
        assert.equal(config["base_model_name_or_path"], hf.dir);
        const loraParams = trained[0]!.parameters.filter((p) => p.name.includes(".lora_"));
        assert.equal(loraParams.length, 2 * 3 * 2); // layers × targets × {A, B}
        const expect = loraParams.flatMap((p) => ["--expect", `${peftTensorName(p.name)}=F32:${p.shape.join(",")}`]);
        assert.match(execFileSync("python3", [validator, join(adapter, "adapter_model.safetensors"), ...expect], {encoding: "utf8"}), /^OK /);

        const loaded = await engines(model, 2, {...settings, seed: 99});
        const before = snapshot(loaded);
        await Promise.all(loaded.map((engine) => loadPeftAdapter(engine, adapter)));
        const want = snapshot(trained);
        for (const [name, values] of snapshot(loaded)) {
            // The base stayed what the pretrained files hold (frozen); the adapters are the saved ones.
            assert.deepEqual(values, name.includes(".lora_") ? want.get(name) : before.get(name), name);
        }
        assert.ok(want.get("model.layers.0.self_attn.q_proj.lora_B.weight")!.some((v) => v !== 0), "B is not zero");
        assert.deepEqual(await losses(loaded), await losses(trained));

        // merge: W + (alpha/r)·B·A in one export, no LoRA needed to reproduce the outputs.
        const merged = fresh("merged");
        await Promise.all(trained.map((engine) => mergeLora(engine, merged)));
        const plain = await engines(await fromPretrainedLlama(merged), 2, null);
        const [a, b] = [await losses(plain), await losses(trained)];
        for (let r = 0; r < 2; r++) assert.ok(Math.abs(a[r]! - b[r]!) < 1e-5 * Math.abs(b[r]!), `${a[r]} vs ${b[r]}`);
        assert.ok(!plain[0]!.parameters.some((p) => p.name.includes(".lora_")));
        for (const engine of [...trained, ...loaded, ...plain]) await engine.dispose();
    });

    it("adapters for another model, other r or targets, or corrupt files: clear errors, nothing changes on any rank", async () => {
        const hf = await writeHfModel(fresh("base2"), {config: tiny});
        const model = await fromPretrainedLlama(hf.dir);
        const source = await engines(model, 2);
        perturbAdapters(source, 2);
        const good = fresh("good");
        await Promise.all(source.map((engine) => savePeftAdapter(engine, good)));
        // Another model: hidden 16.
        const other = await engines(await fromPretrainedLlama((await writeHfModel(fresh("other"), {config: {...tiny, hidden: 16, heads: 4, kvHeads: 2}})).dir), 2);
        const foreign = fresh("foreign");
        await Promise.all(other.map((engine) => savePeftAdapter(engine, foreign)));
        const otherR = await engines(model, 2, {...settings, r: 2});
        const rankTwo = fresh("rank2");
        await Promise.all(otherR.map((engine) => savePeftAdapter(engine, rankTwo)));
        const corrupt = fresh("corrupt");
        await Promise.all(source.map((engine) => savePeftAdapter(engine, corrupt)));
        const file = join(corrupt, "adapter_model.safetensors");
        writeFileSync(file, readFileSync(file).subarray(0, 200));

        const target = await engines(model, 2);
        const before = snapshot(target);
        const attempt = async (dir: string, code: string, message: RegExp): Promise<void> => {
            const results = await Promise.allSettled(target.map((engine) => loadPeftAdapter(engine, dir)));
            for (const result of results) assert.equal(result.status, "rejected");
            await rejectsWith(Promise.reject((results[0] as PromiseRejectedResult).reason), code, message);
            for (const [name, values] of snapshot(target)) assert.deepEqual(values, before.get(name), name);
        };
        await attempt(foreign, "MIXZ_ERR_PEFT_ADAPTER", /adapter_model\.safetensors: tensor "base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight" has shape \[4,16\], the engine's .* is \[4,12\] \(an adapter for another model or rank\)/);
        await attempt(rankTwo, "MIXZ_ERR_PEFT_ADAPTER", /adapter_config\.json: r: the adapter has rank 2, the engine's LoRA has r = 4/);
        await attempt(corrupt, "MIXZ_ERR_SAFETENSORS", /adapter_model\.safetensors: /);
        await attempt(fresh("absent"), "MIXZ_ERR_FILE_READ", /adapter_config\.json: cannot read the adapter config \(ENOENT\)/);
        const config = JSON.parse(readFileSync(join(good, "adapter_config.json"), "utf8")) as Record<string, unknown>;
        writeFileSync(join(good, "adapter_config.json"), JSON.stringify({...config, target_modules: ["q_proj", "v_proj", "down_proj", "up_proj"]}));
        await attempt(good, "MIXZ_ERR_PEFT_ADAPTER", /target_modules: the adapter targets \[down_proj, q_proj, up_proj, v_proj\]/);

        const [noLora] = await engines(model, 1, null);
        await rejectsWith(savePeftAdapter(noLora!, fresh("none")), "MIXZ_ERR_ENGINE_STATE", /no LoRA adapters; call lora\.apply/);
        for (const engine of [...source, ...other, ...otherR, ...target, noLora!]) await engine.dispose();
    });
});

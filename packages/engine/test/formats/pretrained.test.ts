// Hugging Face models: fromPretrainedLlama reads config.json and headers only and refuses configs
// and weights that do not fit (naming the file, the tensor, the expected and the found shape); the
// engine then loads each rank's slices exactly (F32, F16, BF16, sharded, tied); exportPretrained
// writes a model the independent Python validator accepts and that loads back to the same
// parameters and losses.
import assert from "node:assert/strict";
import {execFileSync} from "node:child_process";
import {mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, statSync, writeFileSync, renameSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";
import {fileURLToPath} from "node:url";

import {resolveConfigObject, type ResolvedConfig} from "@mixz/config";

import {fromPretrainedLlama, pretrainedLoadReport, ZeroEngine, type Batch, type LlamaConfig, type LlamaModel} from "@mixz/engine";
import {writeHfModel, type HfModelOptions} from "../helpers/hfModel.js";
import {inProcessWorld} from "../helpers/inProcessWorld.js";
import {rejectsWith} from "../helpers/rejectsWith.js";

const validator = fileURLToPath(new URL("../helpers/validate_safetensors.py", import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), "mixz-pretrained-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

const tiny: LlamaConfig = {vocabSize: 19, hidden: 12, layers: 2, heads: 3, kvHeads: 1, intermediate: 10, maxSeqLen: 8};
let dirs = 0;
let jobs = 0;
const fresh = (label: string): string => join(scratch, `${label}-${dirs++}`);

function config(worldSize: number, extra: Record<string, unknown> = {}): ResolvedConfig {
    return resolveConfigObject({
        train_micro_batch_size_per_gpu: 2,
        optimizer: {type: "AdamW", params: {lr: 0.01}},
        zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0},
        ...extra
    }, {worldSize}).config;
}

async function engines(model: LlamaModel, n: number, extra: Record<string, unknown> = {}): Promise<ZeroEngine[]> {
    const comms = await inProcessWorld(n, {jobId: `pretrained-${process.pid}-${jobs++}`});
    return Promise.all(comms.map((communicator) => ZeroEngine.create({model, config: config(n, extra), communicator, timeoutMs: 20_000})));
}

function batch(seed: number): Batch {
    const ids = new Int32Array(10).map((_, i) => (seed * 5 + i * 7) % tiny.vocabSize);
    return {inputIds: ids, labels: ids.slice(), shape: [2, 5]};
}

/** The full tensor of parameter `name` across ranks' slices. */
function fullParam(ranks: readonly ZeroEngine[], name: string): Float32Array {
    const index = ranks[0]!.parameters.findIndex((p) => p.name === name);
    const out = new Float32Array(ranks[0]!.parameters[index]!.numel);
    for (const engine of ranks) {
        const p = engine.parameters[index]!;
        out.set(engine.readSlice(index, "param"), p.sliceBegin);
    }
    return out;
}


describe("fromPretrained: loading Hugging Face models", () => {
    for (const [label, options, world] of [
        ["F32, one file, 1 rank", {config: tiny, dtype: "F32"}, 1],
        ["BF16, 3 shards, 2 ranks", {config: tiny, dtype: "BF16", shards: 3}, 2],
        ["F16, tied embeddings, 2 ranks", {config: tiny, dtype: "F16", tied: true}, 2]
    ] as const) {
        it(`${label}: every rank's slices hold the file's values exactly, read range by range`, async () => {
            const hf = await writeHfModel(fresh("load"), options as HfModelOptions);
            const model = await fromPretrainedLlama(hf.dir);
            assert.equal(model.config.hidden, 12);
            assert.equal(model.config.kvHeads, 1);
            assert.equal(model.pretrained?.tiedEmbeddings, (options as HfModelOptions).tied === true);
            assert.equal(model.pretrained?.files.length, (options as HfModelOptions).shards ?? 1);
            const ranks = await engines(model, world);
            for (const p of ranks[0]!.parameters) {
                // A tied model's LM head comes from the embedding.
                const source = p.name === "lm_head.weight" && (options as HfModelOptions).tied === true ? "model.embed_tokens.weight" : p.name;
                assert.deepEqual(fullParam(ranks, p.name), hf.values.get(source), p.name);
            }
            // Each rank read its own slices' bytes and the headers, nothing else.
            const item = options.dtype === "F32" ? 4 : 2;
            let total = 0;
            for (const engine of ranks) {
                const report = pretrainedLoadReport(engine)!;
                const own = engine.parameters.reduce((sum, p) => sum + p.sliceLength * item, 0);
                assert.equal(report.tensorBytesRead, own);
                assert.equal(report.reads, engine.parameters.length);
                total += report.tensorBytesRead;
            }
            const stored = [...hf.values.values()].reduce((sum, v) => sum + v.length * item, 0);
            const lmHead = ranks[0]!.parameters.at(-1)!.numel * item;
            assert.equal(total, (options as HfModelOptions).tied === true ? stored + lmHead : stored);
            for (const engine of ranks) await engine.dispose();
        });
    }

    it("bad configs: every key mixz cannot train is named", async () => {
        const check = async (hfConfig: Record<string, unknown>, message: RegExp): Promise<void> => {
            const hf = await writeHfModel(fresh("config"), {config: tiny, hfConfig});
            await rejectsWith(fromPretrainedLlama(hf.dir), "MIXZ_ERR_MODEL_CONFIG", message);
        };
        await check({model_type: "phi3"}, /config\.json: model_type: mixz trains LLaMA-family models \(model_type "llama", "mistral" or "qwen2"\), got "phi3"/);
        await check({architectures: ["MistralForCausalLM"]}, /architectures: mixz trains LlamaForCausalLM for model_type "llama"/);
        await check({hidden_act: "gelu"}, /hidden_act: the engine's MLP is SwiGLU/);
        await check({num_attention_heads: 5}, /5 heads do not divide hidden 12/);
        await check({vocab_size: "19"}, /vocab_size: must be a positive integer, got "19"/);
        await check({attention_bias: true}, /attention_bias: biases are not supported/);
        await check({torch_dtype: "float64"}, /torch_dtype: must be "float32", "float16" or "bfloat16"/);
    });

    it("weights that do not match config.json: the tensor, the expected and the found shape", async () => {
        const shape = await writeHfModel(fresh("mismatch"), {
            config: tiny,
            edit: (t) => (t.name === "model.layers.1.self_attn.k_proj.weight" ? {...t, shape: [12, 12]} : t)
        });
        await rejectsWith(fromPretrainedLlama(shape.dir), "MIXZ_ERR_MODEL_CONFIG",
            /model\.safetensors: tensor "model\.layers\.1\.self_attn\.k_proj\.weight" has shape \[12,12\], config\.json \(.*num_key_value_heads 1\) expects \[4,12\]/);
        const missing = await writeHfModel(fresh("missing"), {config: tiny, edit: (t) => (t.name === "lm_head.weight" ? null : t)});
        await rejectsWith(fromPretrainedLlama(missing.dir), "MIXZ_ERR_MODEL_CONFIG", /tensor "lm_head\.weight" is missing \(config\.json says tie_word_embeddings false/);
        // Weights of a 3-layer model under a 2-layer config.
        const layers = await writeHfModel(fresh("layers"), {config: {...tiny, layers: 3}, hfConfig: {num_hidden_layers: 2}});
        await rejectsWith(fromPretrainedLlama(layers.dir), "MIXZ_ERR_MODEL_CONFIG", /unexpected tensor "model\.layers\.2\.self_attn\.q_proj\.weight": config\.json \(num_hidden_layers 2\)/);
    });

    it("missing, corrupt and truncated files are named", async () => {
        await rejectsWith(fromPretrainedLlama(join(scratch, "nowhere")), "MIXZ_ERR_FILE_READ", /nowhere: not a model directory \(ENOENT\)/);
        const noConfig = await writeHfModel(fresh("noconfig"), {config: tiny});
        rmSync(join(noConfig.dir, "config.json"));
        await rejectsWith(fromPretrainedLlama(noConfig.dir), "MIXZ_ERR_FILE_READ", /config\.json: missing: .* is not a Hugging Face model directory \(it has model\.safetensors\)/);
        const noWeights = await writeHfModel(fresh("noweights"), {config: tiny});
        renameSync(join(noWeights.dir, "model.safetensors"), join(noWeights.dir, "pytorch_model.bin"));
        await rejectsWith(fromPretrainedLlama(noWeights.dir), "MIXZ_ERR_FILE_READ", /neither model\.safetensors nor model\.safetensors\.index\.json.*PyTorch \.bin weights are not read/);
        const truncated = await writeHfModel(fresh("truncated"), {config: tiny});
        const file = join(truncated.dir, "model.safetensors");
        truncateSync(file, statSync(file).size - 10);
        await rejectsWith(fromPretrainedLlama(truncated.dir), "MIXZ_ERR_SAFETENSORS", new RegExp(`${file.replace(/[.]/g, "\\.")}: .*truncated data`));
        const corrupt = await writeHfModel(fresh("corrupt"), {config: tiny});
        const bytes = readFileSync(join(corrupt.dir, "model.safetensors"));
        bytes.write("[", 8);
        writeFileSync(join(corrupt.dir, "model.safetensors"), bytes);
        await rejectsWith(fromPretrainedLlama(corrupt.dir), "MIXZ_ERR_SAFETENSORS", /model\.safetensors: the header does not start with '\{'/);
        const shard = await writeHfModel(fresh("shard"), {config: tiny, shards: 2});
        rmSync(join(shard.dir, "model-00002-of-00002.safetensors"));
        await rejectsWith(fromPretrainedLlama(shard.dir), "MIXZ_ERR_FILE_READ", /model-00002-of-00002\.safetensors: missing: model\.safetensors\.index\.json maps/);
        const dtype = await writeHfModel(fresh("dtype"), {config: tiny});
        const header = readFileSync(join(dtype.dir, "model.safetensors"));
        const text = header.toString("latin1").replace(`"model.norm.weight":{"dtype":"F32"`, `"model.norm.weight":{"dtype":"I32"`);
        writeFileSync(join(dtype.dir, "model.safetensors"), Buffer.from(text, "latin1"));
        await rejectsWith(fromPretrainedLlama(dtype.dir), "MIXZ_ERR_MODEL_CONFIG", /tensor "model\.norm\.weight" is I32; mixz loads F32, F16 or BF16 weights/);
    });

    it("a shard truncated after fromPretrained: the engine is not created, on either rank", async () => {
        const hf = await writeHfModel(fresh("late"), {config: tiny, shards: 2});
        const model = await fromPretrainedLlama(hf.dir);
        const shard = join(hf.dir, "model-00002-of-00002.safetensors");
        truncateSync(shard, statSync(shard).size - 4);
        const comms = await inProcessWorld(2, {jobId: `pretrained-${process.pid}-${jobs++}`});
        const results = await Promise.allSettled(comms.map((communicator) => ZeroEngine.create({model, config: config(2), communicator, timeoutMs: 20_000})));
        for (const result of results) {
            assert.equal(result.status, "rejected");
            assert.match(String((result as PromiseRejectedResult).reason), /model-00002-of-00002\.safetensors: .*truncated|rank \d failed/);
        }
        await Promise.all(comms.map((c) => c.dispose()));
    });
});

describe("exportPretrained: a consolidated Hugging Face model", () => {
    for (const [precision, dtype, extra] of [
        ["fp32", "F32", {}],
        ["bf16", "BF16", {bf16: {enabled: true}}]
    ] as const) {
        it(`${precision}, 2 ranks: config.json + model.safetensors (${dtype}, valid); loading it back gives the same parameters and losses`, async () => {
            const hf = await writeHfModel(fresh("src"), {config: tiny, dtype: "BF16", shards: 2, tied: true});
            const ranks = await engines(await fromPretrainedLlama(hf.dir), 2, extra);
            for (let step = 0; step < 2; step++) {
                await Promise.all(ranks.map(async (engine, r) => {
                    const loss = await engine.forward(batch(step * 2 + r));
                    await engine.backward(loss);
                    await engine.step();
                }));
            }
            const out = fresh("export");
            await Promise.all(ranks.map((engine) => engine.exportPretrained(out)));
            assert.deepEqual(readdirSync(out).sort(), ["config.json", "model.safetensors"]);
            const hfConfig = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
            assert.equal(hfConfig["tie_word_embeddings"], false);
            assert.equal(hfConfig["torch_dtype"], precision === "fp32" ? "float32" : "bfloat16");
            assert.equal(hfConfig["eos_token_id"], 2, "the source config's other keys are kept");
            const expect = ranks[0]!.parameters.flatMap((p) => ["--expect", `${p.name}=${dtype}:${p.shape.join(",")}`]);
            assert.match(execFileSync("python3", [validator, join(out, "model.safetensors"), ...expect], {encoding: "utf8"}), /^OK /);

            const again = await engines(await fromPretrainedLlama(out), 2, extra);
            for (const p of ranks[0]!.parameters) assert.deepEqual(fullParam(again, p.name), fullParam(ranks, p.name), p.name);
            const losses = async (set: ZeroEngine[]): Promise<number[]> => Promise.all(set.map(async (e, r) => (await e.evaluate(batch(9 + r))).value));
            assert.deepEqual(await losses(again), await losses(ranks));
            for (const engine of [...ranks, ...again]) await engine.dispose();
        });
    }

    it("exporting twice into one directory replaces the files; no staging directory is left", async () => {
        const [engine] = await engines((await fromPretrainedLlama((await writeHfModel(fresh("twice"), {config: tiny})).dir)), 1);
        const out = fresh("twice-out");
        await engine!.exportPretrained(out);
        const loss = await engine!.forward(batch(1));
        await engine!.backward(loss);
        await engine!.step();
        await engine!.exportPretrained(out);
        assert.deepEqual(readdirSync(out).sort(), ["config.json", "model.safetensors"]);
        const [back] = await engines(await fromPretrainedLlama(out), 1);
        assert.deepEqual(fullParam([back!], "model.norm.weight"), fullParam([engine!], "model.norm.weight"));
        await engine!.dispose();
        await back!.dispose();
    });
});

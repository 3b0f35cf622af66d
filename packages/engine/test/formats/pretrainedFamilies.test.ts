// The LLaMA family's config.json variants fromPretrained accepts — rope_scaling "llama3" and
// "linear", model_type "mistral" within its window, model_type "qwen2" (q/k/v biases, sliding
// window off), an explicit head_dim equal to hidden / heads — checked against an fp64 reference written apart from mixz (helpers/llama_reference.py,
// torch autograd in float64 on the same weights): the fp32 engine's loss and every parameter's
// gradient after one backward at world size 1. Then the one-line refusals of every field that
// would change the maths, and the export → import round trip keeping rope_scaling and the family.
import assert from "node:assert/strict";
import {execFileSync} from "node:child_process";
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";
import {fileURLToPath} from "node:url";

import {resolveConfigObject} from "@mixz/config";

import {fromPretrainedLlama, ZeroEngine, type Batch, type LlamaConfig, type LlamaModel} from "@mixz/engine";
import {writeHfModel} from "../helpers/hfModel.js";
import {inProcessWorld} from "../helpers/inProcessWorld.js";
import {rejectsWith} from "../helpers/rejectsWith.js";

const reference = fileURLToPath(new URL("../helpers/llama_reference.py", import.meta.url));
// Debian's interpreter, which has python3-torch (a pyenv python3 on PATH may not).
const python = "/usr/bin/python3";
const scratch = mkdtempSync(join(tmpdir(), "mixz-families-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

// Head size 8 with θ = 10000: wavelengths ≈ 6, 63, 628, 6283, so llama3 with
// original_max_position_embeddings 64 keeps one frequency, blends one and divides two. Two query
// heads per KV head.
const small: LlamaConfig = {vocabSize: 23, hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 24, maxSeqLen: 16};
const tiny: LlamaConfig = {vocabSize: 19, hidden: 12, layers: 1, heads: 3, kvHeads: 1, intermediate: 10, maxSeqLen: 8};
const llama3 = {rope_type: "llama3", factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 64};
const linear = {type: "linear", factor: 4.0};
// What a Qwen2 config.json carries (its window keys, off); the engine's config needs attentionBias
// for writeHfModel to write the q/k/v biases.
const qwen2 = {model_type: "qwen2", architectures: ["Qwen2ForCausalLM"], use_sliding_window: false, sliding_window: 4, max_window_layers: 1};
let dirs = 0;
let jobs = 0;
const fresh = (label: string): string => join(scratch, `${label}-${dirs++}`);

// Loss: relative. Gradients: per tensor, the largest difference against the tensor's largest
// reference entry (fp32 accumulation through two layers is ~1e-6 of it; a wrong frequency is far
// above). Measured (this machine, CPU): loss ≤ 6e-8, gradients ≤ 3.2e-6 (qwen2, with its biases: 8.7e-6).
const lossTolerance = 1e-5;
const gradTolerance = 2e-5;

async function engine(model: LlamaModel): Promise<ZeroEngine> {
    const [communicator] = await inProcessWorld(1, {jobId: `families-${process.pid}-${jobs++}`});
    const config = resolveConfigObject({
        train_micro_batch_size_per_gpu: 2,
        optimizer: {type: "AdamW", params: {lr: 0.01}},
        zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0}
    }, {worldSize: 1}).config;
    return ZeroEngine.create({model, config, communicator: communicator!, timeoutMs: 20_000});
}

/** Two sequences of 12 tokens, a few labels ignored. */
function batchOf(config: LlamaConfig): {batch: Batch; ids: number[][]; labels: number[][]} {
    const seq = 12;
    const ids = [0, 1].map((b) => Array.from({length: seq}, (_, t) => (b * 11 + t * 7 + 3) % config.vocabSize));
    const labels = ids.map((row, b) => row.map((id, t) => (t === 4 + b ? -100 : id)));
    const batch: Batch = {inputIds: Int32Array.from(ids.flat()), labels: Int32Array.from(labels.flat()), shape: [2, seq]};
    return {batch, ids, labels};
}

interface Reference {
    readonly loss: number;
    readonly grads: Record<string, number[]>;
}

function referenceOf(dir: string, ids: number[][], labels: number[][]): Reference {
    const batchFile = join(dir, "batch.json");
    writeFileSync(batchFile, JSON.stringify({input_ids: ids, labels}));
    return JSON.parse(execFileSync(python, [reference, dir, batchFile], {encoding: "utf8", maxBuffer: 64 << 20})) as Reference;
}

/** mixz's loss and worst gradient error against the reference on the model in `dir`. */
async function compare(dir: string, config: LlamaConfig): Promise<{loss: number; lossError: number; gradError: number}> {
    const {batch, ids, labels} = batchOf(config);
    const expected = referenceOf(dir, ids, labels);
    const e = await engine(await fromPretrainedLlama(dir));
    const loss = await e.forward(batch);
    await e.backward(loss);
    let gradError = 0;
    assert.deepEqual(e.parameters.map((p) => p.name).sort(), Object.keys(expected.grads).sort());
    for (const [i, p] of e.parameters.entries()) {
        const got = e.readSlice(i, "grad");
        const want = expected.grads[p.name]!;
        assert.equal(got.length, want.length, p.name);
        const scale = Math.max(...want.map(Math.abs));
        assert.ok(scale > 0, `${p.name}: the reference gradient is zero`);
        const err = Math.max(...want.map((w, k) => Math.abs(got[k]! - w))) / scale;
        assert.ok(err <= gradTolerance, `${p.name}: gradient differs by ${err.toExponential(2)} of its largest entry`);
        gradError = Math.max(gradError, err);
    }
    await e.dispose();
    const lossError = Math.abs(loss.value - expected.loss) / Math.abs(expected.loss);
    assert.ok(lossError <= lossTolerance, `loss ${loss.value} vs the reference ${expected.loss} (relative ${lossError.toExponential(2)})`);
    return {loss: loss.value, lossError, gradError};
}

describe("fromPretrained: LLaMA-family configs against an fp64 reference", () => {
    const losses = new Map<string, number>();
    for (const [label, hfConfig, config] of [
        ["llama, plain RoPE", {}, small],
        ["llama, rope_scaling llama3 (LLaMA 3.1)", {rope_scaling: llama3, head_dim: 8}, small],
        ["llama, rope_scaling linear (legacy \"type\")", {rope_scaling: linear}, small],
        ["mistral, sliding_window ≥ max_position_embeddings", {model_type: "mistral", architectures: ["MistralForCausalLM"], sliding_window: 16}, small],
        ["qwen2, q/k/v biases, rope_theta 1e6", {...qwen2, rope_theta: 1_000_000}, {...small, attentionBias: true}]
    ] as const) {
        it(`${label}: the fp32 engine's loss and every gradient match torch in float64`, async () => {
            const hf = await writeHfModel(fresh("ref"), {config, hfConfig, amplitude: 0.3});
            if (config.attentionBias === true) assert.ok(hf.values.has("model.layers.1.self_attn.k_proj.bias"), "the biases are written");
            const result = await compare(hf.dir, config);
            losses.set(label, result.loss);
            console.log(`${label}: loss ${result.loss.toFixed(6)}, relative loss error ${result.lossError.toExponential(2)}, worst gradient error ${result.gradError.toExponential(2)}`);
        });
    }
    it("qwen2 under LoRA: the q/k/v biases are frozen with the base weights; a LoRA step trains and changes the loss", async () => {
        const config = {...small, attentionBias: true};
        const hf = await writeHfModel(fresh("qwen2-lora"), {config, hfConfig: qwen2, amplitude: 0.3});
        const e = await engine(await fromPretrainedLlama(hf.dir));
        const trainable = (name: string): boolean => e.parameters.find((p) => p.name === name)!.trainable;
        assert.equal(trainable("model.layers.0.self_attn.q_proj.bias"), true);
        e.applyLora({r: 2, alpha: 4, dropout: 0, targetModules: ["q_proj", "v_proj"], seed: 3});
        for (const name of ["model.layers.0.self_attn.q_proj.bias", "model.layers.1.self_attn.v_proj.bias", "model.layers.0.self_attn.q_proj.weight"]) {
            assert.equal(trainable(name), false, name);
        }
        assert.equal(trainable("model.layers.0.self_attn.q_proj.lora_B.weight"), true);
        const {batch} = batchOf(config);
        const before = await e.forward(batch);
        await e.backward(before);
        await e.step();
        const after = await e.evaluate(batch);
        assert.ok(Number.isFinite(after.value) && after.value !== before.value, `loss ${before.value} → ${after.value}`);
        await e.dispose();
    });
    it("the scalings change the loss by far more than the tolerance (the comparison discriminates)", () => {
        const plain = losses.get("llama, plain RoPE")!;
        for (const [label, loss] of losses) {
            if (label.startsWith("llama, rope_scaling")) assert.ok(Math.abs(loss - plain) / plain > 100 * lossTolerance, `${label}: ${loss} vs plain ${plain}`);
        }
    });
});

describe("fromPretrained: refusals name the field", () => {
    it("every config.json field that would change the maths is refused in one line", async () => {
        const check = async (hfConfig: Record<string, unknown>, message: RegExp, options: {maxSeqLen?: number} = {}): Promise<void> => {
            const hf = await writeHfModel(fresh("refuse"), {config: tiny, hfConfig});
            const error = await rejectsWith(fromPretrainedLlama(hf.dir, options), "MIXZ_ERR_MODEL_CONFIG", message);
            assert.doesNotMatch(String((error as Error).message), /\n/, "one line");
        };
        await check({rope_scaling: {rope_type: "yarn", factor: 4}}, /config\.json: rope_scaling\.rope_type: "yarn" is not supported; mixz implements "linear" and "llama3"/);
        await check({rope_scaling: {rope_type: "dynamic", factor: 2}}, /rope_scaling\.rope_type: "dynamic" is not supported/);
        await check({rope_scaling: {factor: 2}}, /rope_scaling\.rope_type: nothing is not supported/);
        await check({rope_scaling: {rope_type: "linear", type: "llama3", factor: 2}}, /rope_scaling\.rope_type: "linear" contradicts rope_scaling\.type "llama3"/);
        await check({rope_scaling: {...llama3, low_freq_factor: undefined}}, /rope_scaling\.low_freq_factor: must be a positive number for "llama3" scaling, got nothing/);
        await check({rope_scaling: {...llama3, high_freq_factor: 1}}, /rope_scaling\.high_freq_factor: must be above low_freq_factor 1, got 1/);
        await check({rope_scaling: {rope_type: "linear", factor: 0}}, /rope_scaling\.factor: must be a positive number/);
        await check({rope_scaling: {rope_type: "linear", factor: 2, attention_factor: 0.5}}, /rope_scaling\.attention_factor: is not read by mixz's "linear" scaling/);
        await check({rope_parameters: {rope_type: "yarn", rope_theta: 1e4, factor: 4}}, /rope_parameters\.rope_type: "yarn" is not supported/);
        await check({...qwen2, use_sliding_window: true}, /config\.json: use_sliding_window: must be false: the engine attends over the whole causal window, got true/);
        await check({...qwen2, layer_types: ["full_attention", "sliding_attention"]}, /layer_types: every layer must be "full_attention"/);
        await check({...qwen2, mlp_bias: true}, /mlp_bias: biases are not supported/);
        await check({model_type: "qwen2"}, /architectures: mixz trains Qwen2ForCausalLM for model_type "qwen2"/);
        await check({model_type: "gemma", architectures: ["GemmaForCausalLM"]}, /model_type: mixz trains LLaMA-family models \(model_type "llama", "mistral" or "qwen2"\), got "gemma"/);
        await check({model_type: "mistral", architectures: ["MistralForCausalLM"], sliding_window: 4},
            /sliding_window: 4 is below the engine's longest sequence \(max_position_embeddings 8\); .*pass options\.maxSeqLen ≤ 4/);
        await check({model_type: "mistral", architectures: ["MistralForCausalLM"], sliding_window: 4}, /sliding_window: 4 is below the engine's longest sequence \(options\.maxSeqLen 6\)/, {maxSeqLen: 6});
        await check({model_type: "mistral", architectures: ["MistralForCausalLM"], rope_scaling: linear}, /rope_scaling: mixz reads rope_scaling for model_type "llama" and "qwen2" only/);
        await check({model_type: "mistral"}, /architectures: mixz trains MistralForCausalLM for model_type "mistral"/);
        await check({head_dim: 8}, /config\.json: head_dim: 8 differs from hidden_size \/ num_attention_heads = 4; mixz needs them equal/);
        await check({attention_bias: true}, /attention_bias: biases are not supported/);
        await check({mlp_bias: true}, /mlp_bias: biases are not supported/);
        await check({hidden_act: "gelu"}, /hidden_act: the engine's MLP is SwiGLU/);
        await check({partial_rotary_factor: 0.5}, /partial_rotary_factor: the engine rotates the whole head \(factor 1\), got 0\.5/);
        await check({attention_dropout: 0.1}, /attention_dropout: the engine has no attention dropout/);
    });

    it("accepted: mistral with sliding_window null or within options.maxSeqLen, head_dim equal to hidden / heads, rope_type default", async () => {
        const accept = async (hfConfig: Record<string, unknown>, options: {maxSeqLen?: number} = {}): Promise<LlamaModel> =>
            fromPretrainedLlama((await writeHfModel(fresh("accept"), {config: tiny, hfConfig})).dir, options);
        const mistral = {model_type: "mistral", architectures: ["MistralForCausalLM"]};
        assert.equal((await accept({...mistral, sliding_window: null})).config.maxSeqLen, 8);
        assert.equal((await accept({...mistral, sliding_window: 4}, {maxSeqLen: 4})).config.maxSeqLen, 4);
        assert.equal((await accept({head_dim: 4, attention_dropout: 0.0, partial_rotary_factor: 1})).config.ropeScaling, null);
        assert.equal((await accept({rope_scaling: {rope_type: "default"}})).config.ropeScaling, null);
        assert.deepEqual((await accept({rope_scaling: llama3})).dims, {
            ...(await accept({})).dims,
            ropeScaling: "llama3", ropeFactor: 8, ropeLowFreqFactor: 1, ropeHighFreqFactor: 4, ropeOriginalMaxSeq: 64
        });
        // transformers 5's rope_parameters: the same numbers under one key, rope_theta included.
        const v5 = await accept({rope_theta: undefined, rope_parameters: {rope_type: "linear", factor: 2, rope_theta: 500}});
        assert.equal(v5.config.ropeTheta, 500);
        assert.deepEqual(v5.config.ropeScaling, {type: "linear", factor: 2});
    });

    it("accepted: qwen2 tied (small Qwen2 models), sliding_window and max_window_layers unread with use_sliding_window false, rope_scaling as llama", async () => {
        const biased = {...tiny, attentionBias: true};
        const hf = await writeHfModel(fresh("accept-qwen2"), {config: biased, tied: true, hfConfig: {...qwen2, sliding_window: 2, max_window_layers: 0, attention_bias: true}});
        const model = await fromPretrainedLlama(hf.dir);
        assert.equal(model.config.attentionBias, true);
        assert.equal(model.dims.attentionBias, true);
        assert.equal(model.config.maxSeqLen, 8);
        // Tied as every tied model: the separate LM head is loaded from the embedding.
        assert.equal(model.pretrained!.tensors["lm_head.weight"]!.name, "model.embed_tokens.weight");
        assert.deepEqual(model.pretrained!.tensors["model.layers.0.self_attn.v_proj.bias"]!.shape, [4]);
        assert.equal(model.pretrained!.tensors["model.layers.0.self_attn.o_proj.bias"], undefined);
        const {use_sliding_window: _off, ...absent} = qwen2;
        assert.equal((await fromPretrainedLlama((await writeHfModel(fresh("accept-qwen2"), {config: biased, hfConfig: absent})).dir)).config.attentionBias, true);
        const scaled = await writeHfModel(fresh("accept-qwen2"), {config: biased, hfConfig: {...qwen2, rope_scaling: linear}});
        assert.deepEqual((await fromPretrainedLlama(scaled.dir)).config.ropeScaling, {type: "linear", factor: 4});
        // A qwen2 config without the biases in its files: each missing one named.
        const bare = await writeHfModel(fresh("accept-qwen2"), {config: tiny, hfConfig: qwen2});
        await rejectsWith(fromPretrainedLlama(bare.dir), "MIXZ_ERR_MODEL_CONFIG", /tensor "model\.layers\.0\.self_attn\.q_proj\.bias" is missing/);
        // Biases in a llama's files are unexpected.
        const stray = await writeHfModel(fresh("accept-qwen2"), {config: biased});
        await rejectsWith(fromPretrainedLlama(stray.dir), "MIXZ_ERR_MODEL_CONFIG", /unexpected tensor "model\.layers\.0\.self_attn\.q_proj\.bias"/);
    });
});

describe("exportPretrained keeps the family and rope_scaling", () => {
    const architectures = {llama: "LlamaForCausalLM", mistral: "MistralForCausalLM", qwen2: "Qwen2ForCausalLM"} as const;
    for (const [label, hfConfig, expect, config] of [
        ["llama3", {rope_scaling: llama3}, {model_type: "llama", rope_scaling: {...llama3, type: "llama3"}, attention_bias: false}, tiny],
        ["linear", {rope_scaling: linear}, {model_type: "llama", rope_scaling: {rope_type: "linear", type: "linear", factor: 4}}, tiny],
        ["mistral", {model_type: "mistral", architectures: ["MistralForCausalLM"], sliding_window: 8}, {model_type: "mistral", rope_scaling: null, sliding_window: 8}, tiny],
        ["qwen2 (tied, q/k/v biases)", {...qwen2, tie_word_embeddings: true, rope_theta: 1_000_000},
            {model_type: "qwen2", use_sliding_window: false, sliding_window: 4, max_window_layers: 1, rope_theta: 1_000_000, tie_word_embeddings: false, attention_bias: undefined, mlp_bias: undefined},
            {...tiny, attentionBias: true}]
    ] as const) {
        it(`${label}: config.json written back; re-imported, the same model config and losses`, async () => {
            const hf = await writeHfModel(fresh("export-src"), {config, hfConfig, amplitude: 0.3, tied: "tie_word_embeddings" in hfConfig});
            const model = await fromPretrainedLlama(hf.dir);
            const e = await engine(model);
            const out = fresh("export");
            await e.exportPretrained(out);
            const written = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
            for (const [key, value] of Object.entries(expect)) assert.deepEqual(written[key], value, key);
            assert.deepEqual(written["architectures"], [architectures[expect.model_type]]);
            const back = await fromPretrainedLlama(out);
            assert.deepEqual(back.config, model.config);
            assert.deepEqual(back.dims, model.dims);
            const again = await engine(back);
            const {batch} = batchOf(tiny);
            const short: Batch = {inputIds: batch.inputIds.subarray(0, 16), labels: batch.labels!.subarray(0, 16), shape: [2, 8]};
            assert.equal((await again.evaluate(short)).value, (await e.evaluate(short)).value);
            await e.dispose();
            await again.dispose();
        });
    }
});

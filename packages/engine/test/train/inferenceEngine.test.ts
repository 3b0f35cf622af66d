// DeepSpeed's engine semantics that inference and evaluation rely on: a config without an
// optimizer section makes an inference engine (DeepSpeed-Chat's reference and reward models) —
// every parameter frozen, no gradient or optimizer state, forward/evaluate/generate/export work,
// backward/step refused with one line — and forward takes a batch of any shape, the micro-batch
// size being the config's batch arithmetic, not a rule of the engine.
import assert from "node:assert/strict";
import {existsSync, mkdtempSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {describe, it} from "node:test";

import {resolveConfigObject, type ResolvedConfig} from "@mixz/config";
import {MixzError} from "@mixz/protocol";
import {llama, ZeroEngine, type Batch, type LlamaConfig} from "@mixz/engine";
import {disposeAll, inProcessWorld} from "../helpers/inProcessWorld.js";

const tiny: LlamaConfig = {vocabSize: 17, hidden: 12, layers: 2, heads: 3, kvHeads: 1, intermediate: 10, maxSeqLen: 8, seed: 5};
let jobs = 0;

function config(worldSize: number, optimizer: boolean, zero: Record<string, unknown> = {}): ResolvedConfig {
    return resolveConfigObject({
        train_micro_batch_size_per_gpu: 2,
        gradient_accumulation_steps: 2,
        ...(optimizer ? {optimizer: {type: "AdamW", params: {lr: 0.01}}} : {}),
        zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0, ...zero}
    }, {worldSize}).config;
}

async function engines(n: number, cfg: ResolvedConfig): Promise<{engines: ZeroEngine[]; close: () => Promise<void>}> {
    const comms = await inProcessWorld(n, {jobId: `inference-${process.pid}-${jobs++}`});
    const list = await Promise.all(comms.map((communicator) => ZeroEngine.create({model: llama(tiny), config: cfg, communicator, timeoutMs: 20_000})));
    return {engines: list, close: async () => {
        await Promise.all(list.map((engine) => engine.dispose()));
        await disposeAll(comms);
    }};
}

function batch(rows: number, seq: number, seed = 1): Batch {
    const ids = new Int32Array(rows * seq).map((_, i) => (seed * 7 + i * 3) % 17);
    return {inputIds: ids, labels: ids.slice(), shape: [rows, seq]};
}

function refusedForInference(call: string) {
    return (error: unknown): boolean => {
        assert.ok(error instanceof MixzError, String(error));
        assert.equal(error.code, "MIXZ_ERR_ENGINE_STATE");
        assert.equal(error.category, "user");
        assert.match(error.message, new RegExp(`^${call}\\(\\): the config has no optimizer section, so this engine is for inference`));
        assert.ok(!error.message.includes("\n"));
        return true;
    };
}

describe("an engine without an optimizer section (inference, as DeepSpeed's)", () => {
    it("holds no gradient or optimizer state, computes the trainable engine's losses, and refuses backward and step", async () => {
        const inference = await engines(1, config(1, false));
        const training = await engines(1, config(1, true));
        try {
            const [engine] = inference.engines;
            const [reference] = training.engines;
            assert.equal(engine!.hasOptimizer, false);
            assert.equal(reference!.hasOptimizer, true);
            assert.ok(engine!.parameters.every((p) => !p.trainable), "every parameter is frozen");
            const memory = engine!.memoryReport();
            assert.equal(memory.gradientPartitions, 0);
            assert.equal(memory.masterWeights, 0);
            assert.equal(memory.optimizerStates, 0);
            assert.ok(reference!.memoryReport().optimizerStates > 0);

            // forward() keeps nothing for a backward: it can be called again, and evaluate and
            // generate may follow it; the losses are the trainable engine's (same seed, same weights).
            const b = batch(2, 6);
            const first = await engine!.forward(b);
            const again = await engine!.forward(b);
            const evaluated = await engine!.evaluate(b);
            const expected = await reference!.evaluate(b);
            assert.equal(first.value, expected.value);
            assert.equal(again.value, expected.value);
            assert.equal(evaluated.value, expected.value);
            assert.deepEqual(
                Array.from(await engine!.generate(Int32Array.of(1, 2, 3), {maxNewTokens: 3, seed: 2})),
                Array.from(await reference!.generate(Int32Array.of(1, 2, 3), {maxNewTokens: 3, seed: 2}))
            );

            await assert.rejects(engine!.backward(first), refusedForInference("backward"));
            await assert.rejects(engine!.step(), refusedForInference("step"));
            assert.equal(engine!.microSteps, 0, "a refused step counts nothing");

            const out = mkdtempSync(join(tmpdir(), "mixz-inference-"));
            try {
                await engine!.exportPretrained(out);
                assert.ok(existsSync(join(out, "config.json")));
            } finally {
                rmSync(out, {recursive: true, force: true});
            }
        } finally {
            await inference.close();
            await training.close();
        }
    });

    it("2 ranks with int8 frozen weights: every parameter quantizes; the ranks agree, and 1 rank's loss within int8 error", async () => {
        const one = await engines(1, config(1, false, {zero_quantized_nontrainable_weights: true}));
        const two = await engines(2, config(2, false, {zero_quantized_nontrainable_weights: true}));
        try {
            const reports = await Promise.all([...one.engines, ...two.engines].map((engine) => engine.quantizeNontrainableParams()));
            assert.ok(reports.every((r) => r.parameters > 0 && r.bytesAfter < r.bytesBefore), JSON.stringify(reports));
            const b = batch(3, 7);
            const single = await one.engines[0]!.forward(b);
            const pair = await Promise.all(two.engines.map((engine) => engine.forward(b)));
            assert.equal(pair[0]!.value, pair[1]!.value);
            // The int8 blocks are cut per partition, so 1 and 2 ranks quantize slightly different
            // blocks (zeropp.md: scales per parameter partition): equal within quantization error.
            assert.ok(Math.abs(pair[0]!.value - single.value) < 1e-3, `${pair[0]!.value} vs ${single.value}`);
        } finally {
            await one.close();
            await two.close();
        }
    });
});

describe("forward takes a batch of any shape (train_micro_batch_size_per_gpu is 2 here)", () => {
    it("1, 2 and 3 rows train, and a batch's training loss is its evaluation loss", async () => {
        const {engines: [engine], close} = await engines(1, config(1, true));
        try {
            for (const [rows, seq] of [[1, 5], [3, 8], [2, 4], [1, 1]] as const) {
                const b = batch(rows, seq, rows + seq);
                const evaluated = await engine!.evaluate(b);
                const loss = await engine!.forward(b);
                assert.equal(loss.value, evaluated.value, `[${rows}, ${seq}]`);
                await engine!.backward(loss);
                await engine!.step();
            }
            assert.equal(engine!.microSteps, 4);
            assert.equal(engine!.globalSteps, 2, "accumulation counts micro-steps, whatever their rows");
            const after = await engine!.evaluate(batch(2, 6));
            assert.ok(Number.isFinite(after.value));
        } finally {
            await close();
        }
    });
});

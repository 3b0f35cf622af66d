// ZeroEngine in one process: ranks as engines of this process (communicators over an in-memory
// exchange). Bad input — batches, call order, configs, model configurations — is refused with an
// error naming the value, and the engine keeps training afterwards exactly as if the bad call had
// never been made. fp16 dynamic loss scaling skips overflowing steps on every rank alike.
import assert from "node:assert/strict";
import {mkdtempSync, readdirSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";

import {resolveConfigObject, type ResolvedConfig} from "@mixz/config";
import {MixzError} from "@mixz/protocol";

import {llama, ZeroEngine, type Batch, type LlamaConfig, type Loss} from "@mixz/engine";
import {inProcessWorld} from "../helpers/inProcessWorld.js";
import {rejectsWith} from "../helpers/rejectsWith.js";

const tiny: LlamaConfig = {vocabSize: 17, hidden: 12, layers: 2, heads: 3, kvHeads: 1, intermediate: 10, maxSeqLen: 8, seed: 5};
let jobs = 0;

function config(extra: Record<string, unknown> = {}, worldSize = 1): ResolvedConfig {
    return resolveConfigObject({
        train_micro_batch_size_per_gpu: 2,
        gradient_accumulation_steps: 1,
        optimizer: {type: "AdamW", params: {lr: 0.01}},
        zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0},
        ...extra
    }, {worldSize}).config;
}

async function engines(n: number, cfg: ResolvedConfig = config({}, n), model = llama(tiny)): Promise<ZeroEngine[]> {
    const comms = await inProcessWorld(n, {jobId: `zero-unit-${process.pid}-${jobs++}`});
    return Promise.all(comms.map((communicator) => ZeroEngine.create({model, config: cfg, communicator, timeoutMs: 20_000})));
}

function batch(seed: number, micro = 2, seq = 5): Batch {
    const ids = new Int32Array(micro * seq).map((_, i) => (seed * 7 + i * 3) % 17);
    return {inputIds: ids, labels: ids.slice(), shape: [micro, seq]};
}

async function trainStep(engine: ZeroEngine, b: Batch): Promise<number> {
    const loss = await engine.forward(b);
    await engine.backward(loss);
    await engine.step();
    return loss.value;
}


after(() => {
    assert.deepEqual(readdirSync("/dev/shm").filter((name) => name.startsWith(`mixz-zero-unit-${process.pid}-`)), []);
});

describe("ZeroEngine: bad batches are refused and change nothing", () => {
    it("every kind of bad batch names the value; training then matches an engine that never saw them", async () => {
        const [engine] = await engines(1);
        const [reference] = await engines(1);
        const good = batch(1);
        const cases: Array<[Batch | null, RegExp]> = [
            [{...good, inputIds: new Float32Array(10) as unknown as Int32Array}, /inputIds must be an Int32Array, got Float32Array/],
            [{...good, shape: [2, 4]}, /inputIds has 10 ids, shape \[2, 4\] needs 8/],
            [{...good, shape: [2, 5.5] as unknown as [number, number]}, /shape must be \[micro-batch, sequence length\] of positive integers, got \[2,5\.5\]/],
            [{...good, shape: [1, 10]}, /sequence length 10 exceeds the model's maxSeqLen 8/],
            [{...good, inputIds: Int32Array.from(good.inputIds, (v, i) => (i === 3 ? 17 : v))}, /inputIds\[3\] = 17 is outside the vocabulary \[0, 17\)/],
            [{...good, inputIds: Int32Array.from(good.inputIds, (v, i) => (i === 0 ? -1 : v))}, /inputIds\[0\] = -1 is outside the vocabulary/],
            [{...good, labels: Int32Array.from(good.labels!, (v, i) => (i === 9 ? 99 : v))}, /labels\[9\] = 99 is outside the vocabulary \[0, 17\) and is not the ignore index -100/],
            [{...good, labels: new Int32Array(3)}, /labels has 3 entries, inputIds has 10/],
            [{inputIds: good.inputIds, shape: good.shape}, /labels are required/],
            [null, /must be an object/]
        ];
        for (const [bad, message] of cases) await rejectsWith(engine!.forward(bad as Batch), "MIXZ_ERR_BATCH", message);
        await rejectsWith(engine!.backward({value: 1, tokens: 1, forwardId: 1} as Loss), "MIXZ_ERR_ENGINE_STATE", /backward\(loss\) needs the loss of the latest forward\(\)/);
        for (let step = 0; step < 3; step++) {
            assert.equal(await trainStep(engine!, batch(step)), await trainStep(reference!, batch(step)));
        }
        await engine!.dispose();
        await reference!.dispose();
    });

    it("a loss is used by one backward only; evaluate() waits for the pending backward; calls do not overlap", async () => {
        const [engine] = await engines(1);
        const loss = await engine!.forward(batch(2));
        await rejectsWith(engine!.evaluate(batch(2)), "MIXZ_ERR_ENGINE_STATE", /evaluate\(\) between forward\(\) and backward\(\)/);
        await engine!.backward(loss);
        assert.equal((await engine!.evaluate(batch(2))).value, loss.value);
        await rejectsWith(engine!.backward(loss), "MIXZ_ERR_ENGINE_STATE", /once/);
        const first = engine!.forward(batch(3));
        assert.throws(() => engine!.memoryReport().total > 0 && engine!.readSlice(0, "param"), /another engine call is running/);
        await rejectsWith(engine!.forward(batch(3)), "MIXZ_ERR_ENGINE_STATE", /another engine call is running/);
        await first;
        await engine!.dispose();
        await rejectsWith(engine!.forward(batch(3)), "MIXZ_ERR_ENGINE_STATE", /disposed/);
    });
});

describe("ZeroEngine: configurations it cannot train", () => {
    it("stage 2 and offloading: one problem per key", async () => {
        const [comm] = await inProcessWorld(1, {jobId: `zero-unit-${process.pid}-${jobs++}`});
        const bad = resolveConfigObject({
            train_micro_batch_size_per_gpu: 1,
            zero_optimization: {stage: 2, offload_optimizer: {device: "cpu"}}
        }, {worldSize: 1}).config;
        await assert.rejects(ZeroEngine.create({model: llama(tiny), config: bad, communicator: comm!}), (error: unknown) => {
            assert.ok(error instanceof MixzError);
            assert.match(error.message, /zero_optimization\.stage: mixz's engine trains with ZeRO stage 3; got stage 2/);
            assert.doesNotMatch(error.message, /an optimizer section/, "an optimizer-less config is an inference engine, not a problem");
            assert.match(error.message, /zero_optimization\.offload_optimizer\.device: offloading is not supported/);
            return true;
        });
        await comm!.dispose();
    });

    it("model configurations: every wrong field is named", () => {
        const check = (config: Partial<LlamaConfig>, message: RegExp): void => {
            assert.throws(() => llama({...tiny, ...config} as LlamaConfig), (error: unknown) => {
                assert.ok(error instanceof MixzError);
                assert.equal(error.code, "MIXZ_ERR_MODEL_CONFIG");
                assert.match(error.message, message);
                return true;
            });
        };
        check({heads: 5}, /heads: 5 heads do not divide hidden 12/);
        check({heads: 4}, /head dimension hidden\/heads = 3 must be even/);
        check({kvHeads: 2}, /kvHeads: 2 KV heads do not divide 3 attention heads/);
        check({vocabSize: 0}, /vocabSize: must be an integer in \[1, /);
        check({hidden: 12.5}, /hidden: must be an integer/);
        check({ropeTheta: -1}, /ropeTheta: must be a positive number, got -1/);
        check({layer: 2} as unknown as LlamaConfig, /layer: unknown field/);
        check({ropeScaling: {type: "yarn"}} as unknown as LlamaConfig, /ropeScaling\.type: must be "linear" or "llama3", got "yarn"/);
        check({ropeScaling: {type: "linear", factor: -2}}, /ropeScaling\.factor: must be a positive number, got -2/);
        check({ropeScaling: {type: "llama3", factor: 8, lowFreqFactor: 4, highFreqFactor: 1, originalMaxPositions: 64}}, /ropeScaling\.highFreqFactor: must be above lowFreqFactor 4, got 1/);
        check({ropeScaling: {type: "linear", factor: 2, lowFreqFactor: 1}} as unknown as LlamaConfig, /ropeScaling\.lowFreqFactor: unknown field for "linear" scaling/);
    });
});

describe("ZeroEngine: two ranks in one process", () => {
    it("losses equal one rank accumulating both micro-batches; the slices tile every parameter", async () => {
        const [single] = await engines(1, config({gradient_accumulation_steps: 2}, 1));
        const pair = await engines(2);
        for (let step = 0; step < 3; step++) {
            const a = await trainStep(single!, batch(10 * step));
            const b = await trainStep(single!, batch(10 * step + 1));
            const [c, d] = await Promise.all(pair.map((engine, rank) => trainStep(engine, batch(10 * step + rank))));
            assert.ok(Math.abs(a - c!) <= 1e-6 * Math.abs(a) && Math.abs(b - d!) <= 1e-6 * Math.abs(b), `${a} ${b} vs ${c} ${d}`);
        }
        for (let i = 0; i < single!.parameters.length; i++) {
            const whole = single!.readSlice(i, "param");
            const halves = pair.map((engine) => engine.readSlice(i, "param"));
            assert.equal(halves[0]!.length + halves[1]!.length, whole.length, single!.parameters[i]!.name);
            const joined = new Float32Array(whole.length);
            joined.set(halves[0]!, 0);
            joined.set(halves[1]!, halves[0]!.length);
            for (let j = 0; j < whole.length; j++) assert.ok(Math.abs(joined[j]! - whole[j]!) <= 1e-5, `${single!.parameters[i]!.name}[${j}]`);
        }
        await Promise.all([single!, ...pair].map((engine) => engine.dispose()));
    });
});

describe("ZeroEngine: fp16 dynamic loss scaling", () => {
    it("the default scale 2^32 overflows the fp16 gradients: steps are skipped and the scale halves until they fit, on both ranks", async () => {
        const pair = await engines(2, config({fp16: {enabled: true}}, 2));
        const outcomes = [];
        for (let step = 0; step < 30; step++) {
            outcomes.push(await Promise.all(pair.map(async (engine, rank) => {
                const loss = await engine.forward(batch(step * 2 + rank));
                await engine.backward(loss);
                return engine.step();
            })));
        }
        const [first] = outcomes[0]!;
        assert.equal(first!.skipped, true);
        assert.equal(first!.lossScale, 2 ** 31);
        for (const [a, b] of outcomes) assert.deepEqual(a, b);
        const skipped = outcomes.filter(([o]) => o!.skipped).length;
        const applied = outcomes.filter(([o]) => !o!.skipped);
        assert.ok(skipped >= 1 && applied.length >= 1, `skipped ${skipped}`);
        // Scale only falls while steps overflow (window 1000 not reached), and applied steps are counted.
        assert.equal(applied.at(-1)![0]!.globalSteps, applied.length);
        assert.ok(applied.every(([o]) => o!.lossScale < 2 ** 31 && o!.gradNorm > 0));
        await Promise.all(pair.map((engine) => engine.dispose()));
    });
});

describe("ZeroEngine: LoRA dropout", () => {
    const allLinears = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    /** Training losses of 8 steps and evaluate() losses before and after, with LoRA on every linear. */
    async function run(dropout: number, seed: number): Promise<{train: number[]; before: number; after: number}> {
        const [engine] = await engines(1);
        engine!.applyLora({r: 4, alpha: 8, dropout, targetModules: allLinears, seed});
        const before = (await engine!.evaluate(batch(0))).value;
        const train: number[] = [];
        for (let step = 0; step < 8; step++) train.push(await trainStep(engine!, batch(step % 2)));
        const after = (await engine!.evaluate(batch(0))).value;
        await engine!.dispose();
        return {train, before, after};
    }

    it("dropout 0.1 changes the training losses from the second step on, not evaluate(); the same seed repeats; the loss still falls", async () => {
        const plain = await run(0, 3);
        const dropped = await run(0.1, 3);
        const again = await run(0.1, 3);
        // B starts at zero, so the adapters (dropped or not) add nothing at the first step.
        assert.equal(dropped.before, plain.before);
        assert.equal(dropped.train[0], plain.train[0]);
        for (let step = 1; step < 8; step++) assert.notEqual(dropped.train[step], plain.train[step], `step ${step}`);
        assert.deepEqual(again, dropped);
        assert.ok(dropped.after < dropped.before - 0.05, `evaluate() loss ${dropped.before} → ${dropped.after}`);
        assert.ok(dropped.train.at(-1)! < dropped.train[0]!, dropped.train.join(" "));
    });

    it("a resumed run draws the masks the uninterrupted run draws (the checkpoint records the counter)", async () => {
        const dir = mkdtempSync(join(tmpdir(), "mixz-dropout-ckpt-"));
        try {
            const lora = {r: 4, alpha: 8, dropout: 0.2, targetModules: allLinears, seed: 3};
            const [straight] = await engines(1);
            straight!.applyLora(lora);
            const expected: number[] = [];
            for (let step = 0; step < 4; step++) {
                expected.push(await trainStep(straight!, batch(step)));
                if (step === 1) await straight!.saveCheckpoint(dir);
            }
            const [resumed] = await engines(1);
            resumed!.applyLora(lora);
            await resumed!.loadCheckpoint(dir);
            const actual = [await trainStep(resumed!, batch(2)), await trainStep(resumed!, batch(3))];
            assert.deepEqual(actual, expected.slice(2));
            await Promise.all([straight!.dispose(), resumed!.dispose()]);
        } finally {
            rmSync(dir, {recursive: true, force: true});
        }
    });

    it("each rank draws its own masks: two ranks on the same batch part after the first step (and agree without dropout)", async () => {
        for (const dropout of [0, 0.3]) {
            const pair = await engines(2);
            for (const engine of pair) engine.applyLora({r: 2, alpha: 4, dropout, targetModules: allLinears, seed: 9});
            const losses: number[][] = [];
            for (let step = 0; step < 3; step++) losses.push(await Promise.all(pair.map((engine) => trainStep(engine, batch(step)))));
            assert.equal(losses[0]![0], losses[0]![1]);
            for (const [a, b] of losses.slice(1)) {
                if (dropout === 0) assert.equal(a, b);
                else assert.notEqual(a, b);
            }
            await Promise.all(pair.map((engine) => engine.dispose()));
        }
    });

    it("a dropout outside [0, 1) is refused, naming the value", async () => {
        const [engine] = await engines(1);
        for (const dropout of [1, -0.1, Number.NaN, "0.1" as unknown as number]) {
            assert.throws(() => engine!.applyLora({r: 2, dropout}), (error: unknown) => {
                assert.ok(error instanceof MixzError);
                assert.equal(error.code, "MIXZ_ERR_MODEL_CONFIG");
                assert.match(error.message, /lora\.apply: dropout: must be a number in \[0, 1\), got /);
                return true;
            });
        }
        assert.equal(engine!.lora, null);
        engine!.applyLora({r: 2, dropout: 0.05});
        assert.equal(engine!.lora!.dropout, 0.05);
        await engine!.dispose();
    });
});

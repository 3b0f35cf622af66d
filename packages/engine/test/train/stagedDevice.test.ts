// The device contract of mixz::zero on a machine without a GPU: the "cpu-staged" backend is the
// CPU backend claiming device memory (hostAddressable() false), so the engine takes every path a
// CUDA backend makes it take — partitions, gradients and optimizer state in backend state memory,
// gathers unpacked by the backend at one rank and staged through host memory for the host
// transports at several, gradients downloaded for the reduce-scatter and accumulated by the
// backend, the step's arithmetic through the backend, activations and KV caches in backend
// buffers, checkpoints and exports through downloads. The arithmetic is the same, so everything
// must equal the plain CPU engine bit for bit: losses, every slice of every kind, generated
// tokens, gathered parameters.
import assert from "node:assert/strict";
import {describe, it} from "node:test";

import {resolveConfigObject, type ResolvedConfig} from "@mixz/config";
import {llama, loraTargetModules, ZeroEngine, type Batch, type ComputeDevice, type LlamaConfig, type NativeSliceKind} from "@mixz/engine";
import {disposeAll, inProcessWorld} from "../helpers/inProcessWorld.js";

const tiny: LlamaConfig = {vocabSize: 19, hidden: 12, layers: 2, heads: 3, kvHeads: 1, intermediate: 10, maxSeqLen: 10, seed: 11};
let jobs = 0;

function config(worldSize: number, dtype: "fp32" | "bf16" | "fp16", zero: Record<string, unknown>): ResolvedConfig {
    return resolveConfigObject({
        train_micro_batch_size_per_gpu: 2,
        gradient_accumulation_steps: 2,
        gradient_clipping: 1.0,
        optimizer: {type: "AdamW", params: {lr: 0.02, weight_decay: 0.01}},
        ...(dtype === "bf16" ? {bf16: {enabled: true}} : dtype === "fp16" ? {fp16: {enabled: true, initial_scale_power: 8}} : {}),
        zero_optimization: {stage: 3, stage3_param_persistence_threshold: 12, reduce_bucket_size: 40, ...zero},
        mixz: {quant_block_size: 64}
    }, {worldSize}).config;
}

function batch(step: number, rank: number): Batch {
    const ids = new Int32Array(2 * 6).map((_, i) => (step * 5 + rank * 3 + i * 7) % 19);
    return {inputIds: ids, labels: ids.slice(), shape: [2, 6]};
}

interface Run {
    readonly losses: number[];
    readonly slices: Float32Array[];
    readonly tokens: number[][];
    readonly gathered: Float32Array[];
}

const kinds: readonly NativeSliceKind[] = ["param", "master", "exp_avg", "exp_avg_sq", "grad"];

async function train(device: ComputeDevice, hosts: string[], cfg: ResolvedConfig, lora: boolean): Promise<Run[]> {
    const comms = await inProcessWorld(hosts.length, {jobId: `staged-${process.pid}-${jobs++}`, hosts});
    const model = llama(tiny);
    const engines = await Promise.all(comms.map((communicator) => ZeroEngine.create({model, config: cfg, communicator, device, timeoutMs: 20_000})));
    try {
        if (lora) {
            for (const engine of engines) engine.applyLora({r: 2, alpha: 4, dropout: 0.1, targetModules: [...loraTargetModules], seed: 3});
            await Promise.all(engines.map((engine) => engine.quantizeNontrainableParams()));
        }
        const losses = engines.map(() => [] as number[]);
        for (let step = 0; step < 6; step++) {
            await Promise.all(engines.map(async (engine, r) => {
                const loss = await engine.forward(batch(step, r));
                await engine.backward(loss);
                await engine.step();
                losses[r]!.push(loss.value);
            }));
        }
        // One more backward leaves gradients in the partitions for the "grad" slices.
        await Promise.all(engines.map(async (engine, r) => engine.backward(await engine.forward(batch(9, r)))));
        const slices = engines.map((engine) => {
            const out: Float32Array[] = [];
            engine.parameters.forEach((p, i) => {
                for (const kind of kinds) {
                    if (kind !== "param" && !p.trainable) continue;
                    out.push(engine.readSlice(i, kind));
                }
            });
            return out;
        });
        await Promise.all(engines.map((engine) => engine.step()));
        const tokens = await Promise.all(engines.map(async (engine) => Array.from(await engine.generate(Int32Array.of(1, 2, 3, 4, 5, 6), {shape: [2, 3], maxNewTokens: 4, seed: 7, temperature: 0.8}))));
        const gathered: Float32Array[] = [];
        for (let i = 0; i < engines[0]!.parameters.length; i++) {
            const all = await Promise.all(engines.map((engine) => engine.gatheredParameter(i)));
            gathered.push(all[0]!);
        }
        return engines.map((_, r) => ({losses: losses[r]!, slices: slices[r]!, tokens: [tokens[r]!], gathered}));
    } finally {
        await Promise.all(engines.map((engine) => engine.dispose()));
        await disposeAll(comms);
    }
}

function assertSame(staged: Run[], cpu: Run[]): void {
    assert.equal(staged.length, cpu.length);
    for (let r = 0; r < cpu.length; r++) {
        assert.deepEqual(staged[r]!.losses, cpu[r]!.losses, `rank ${r}: losses`);
        assert.ok(cpu[r]!.losses.every(Number.isFinite), `rank ${r}: finite losses ${cpu[r]!.losses}`);
        assert.equal(staged[r]!.slices.length, cpu[r]!.slices.length);
        staged[r]!.slices.forEach((slice, k) => assert.deepEqual(slice, cpu[r]!.slices[k], `rank ${r}: slice ${k}`));
        assert.deepEqual(staged[r]!.tokens, cpu[r]!.tokens, `rank ${r}: generated tokens`);
    }
    staged[0]!.gathered.forEach((values, i) => assert.deepEqual(values, cpu[0]!.gathered[i], `gathered parameter ${i}`));
}

describe("the engine behind the device contract (cpu-staged) equals the CPU engine bit for bit", () => {
    it("1 rank, fp32, full fine-tuning: the backend unpacks, accumulates and steps", async () => {
        const cfg = config(1, "fp32", {});
        assertSame(await train("cpu-staged", ["a"], cfg, false), await train("cpu", ["a"], cfg, false));
    });

    it("1 rank, bf16, LoRA with dropout over int8 frozen weights", async () => {
        const cfg = config(1, "bf16", {zero_quantized_nontrainable_weights: true});
        assertSame(await train("cpu-staged", ["a"], cfg, true), await train("cpu", ["a"], cfg, true));
    });

    it("2 ranks, fp16 with loss scaling, qwZ on the fly: staged host gathers and reductions", async () => {
        const cfg = config(2, "fp16", {zero_quantized_weights: true});
        assertSame(await train("cpu-staged", ["a", "a"], cfg, false), await train("cpu", ["a", "a"], cfg, false));
    });

    it("4 ranks on 2 hosts, MixZ++ (qwZ, hpZ 2, qgZ, int8 frozen weights), bf16 LoRA", async () => {
        const hosts = ["a", "a", "b", "b"];
        const cfg = config(4, "bf16", {zero_quantized_weights: true, zero_hpz_partition_size: 2, zero_quantized_gradients: true, zero_quantized_nontrainable_weights: true});
        assertSame(await train("cpu-staged", hosts, cfg, true), await train("cpu", hosts, cfg, true));
    });
});

// The ZeRO-3 engine across real rank processes: N ranks reproduce one rank's losses step by step
// (same global batch: one rank accumulates N micro-batches, N ranks take one each), for world
// sizes whose partitions need padding, with and without prefetch and persistent parameters; a
// tiny model learns a task; bad input is refused with a clear error and no leftovers.
import assert from "node:assert/strict";
import {mkdtempSync, readdirSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";

import {fixture, runMixz} from "../helpers/mixzProcess.js";

const script = fixture("integration/fixtures/zeroTrain.ts");
const scratch = mkdtempSync(join(tmpdir(), "mixz-zero-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

let configs = 0;
function configFile(config: Record<string, unknown>): string {
    const path = join(scratch, `config-${configs++}.json`);
    writeFileSync(path, JSON.stringify(config));
    return path;
}

function zeroConfig(accumulation: number, zero: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): string {
    return configFile({
        train_micro_batch_size_per_gpu: 2,
        gradient_accumulation_steps: accumulation,
        optimizer: {type: "AdamW", params: {lr: 0.001, weight_decay: 0.01}},
        gradient_clipping: 1.0,
        zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0, reduce_bucket_size: 1000, stage3_prefetch_bucket_size: 3000, ...zero},
        ...extra
    });
}

/** "first=F" → loss, over every rank's lines. */
function losses(output: string): Map<string, number> {
    const result = new Map<string, number>();
    for (const match of output.matchAll(/loss step=(\d+) first=(\d+) value=(\S+)/g)) result.set(`${match[1]}/${match[2]}`, Number(match[3]));
    return result;
}

async function train(nproc: number, config: string, args: readonly string[] = []): Promise<Map<string, number>> {
    const run = await runMixz(["launch", "--nproc", String(nproc), "--master-port", "0", "--config", config, script, ...args], {timeoutMs: 240_000});
    assert.equal(run.code, 0, run.stdout + run.stderr);
    for (let rank = 0; rank < nproc; rank++) assert.match(run.stdout, new RegExp(`done rank=${rank} world=${nproc}`));
    return losses(run.stdout);
}

function assertSameLosses(expected: Map<string, number>, actual: Map<string, number>, tolerance: number): void {
    assert.equal(actual.size, expected.size, `${actual.size} losses vs ${expected.size}`);
    let worst = 0;
    for (const [key, value] of expected) {
        const other = actual.get(key);
        assert.ok(other !== undefined, `no loss for ${key}`);
        worst = Math.max(worst, Math.abs(other - value) / Math.abs(value));
    }
    assert.ok(worst <= tolerance, `largest relative loss difference ${worst} > ${tolerance}`);
}

function shmLeftovers(): string[] {
    return readdirSync("/dev/shm").filter((name) => name.startsWith("mixz-"));
}

describe("ZeRO-3: N ranks give one rank's losses (fp32, 20 steps)", () => {
    let reference: Map<string, number> | undefined;
    const referenceFor = async (): Promise<Map<string, number>> => (reference ??= await train(1, zeroConfig(12), ["--steps", "20"]));

    for (const n of [2, 3, 4]) {
        it(`${n} ranks (parameters padded to a multiple of ${n})`, async () => {
            const expected = await referenceFor();
            // The reference accumulates 12 micro-batches; N ranks accumulate 12 / N each.
            const actual = await train(n, zeroConfig(12 / n), ["--steps", "20"]);
            assert.equal(expected.size, 20 * 12);
            assertSameLosses(expected, actual, 1e-5);
        });
    }

    it("without prefetch or overlap, with persistent small parameters and tiny reduce buckets: the same losses", async () => {
        const expected = await referenceFor();
        const actual = await train(3, zeroConfig(4, {overlap_comm: false, stage3_prefetch_bucket_size: 0, stage3_param_persistence_threshold: 40, reduce_bucket_size: 7}), ["--steps", "20"]);
        assertSameLosses(expected, actual, 1e-5);
    });
});

describe("ZeRO-3: learning and precision", () => {
    it("2 ranks learn to reverse sequences from scratch", async () => {
        const config = configFile({
            train_micro_batch_size_per_gpu: 8,
            gradient_accumulation_steps: 1,
            optimizer: {type: "AdamW", params: {lr: 0.003, weight_decay: 0.0}},
            // Linear warmup over 30 steps from 0 (the scheduler is part of what is tested).
            scheduler: {type: "WarmupLR", params: {warmup_min_lr: 0, warmup_max_lr: 0.003, warmup_num_steps: 30, warmup_type: "linear"}},
            zero_optimization: {stage: 3}
        });
        const run = await runMixz(["launch", "--nproc", "2", "--master-port", "0", "--config", config, script, "--task", "reverse",
            "--steps", "800", "--print-every", "100", "--vocab", "12", "--hidden", "64", "--heads", "4", "--kv-heads", "2",
            "--intermediate", "128", "--layers", "2", "--seq", "11"], {timeoutMs: 300_000});
        assert.equal(run.code, 0, run.stdout + run.stderr);
        const byStep = [...run.stdout.matchAll(/loss step=(\d+) first=\d+ value=(\S+)/g)].map((m) => [Number(m[1]), Number(m[2])] as const);
        const first = byStep.filter(([step]) => step === 0).map(([, loss]) => loss);
        const last = byStep.filter(([step]) => step === 799).map(([, loss]) => loss);
        assert.ok(first.length === 2 && last.length === 2, run.stdout);
        // ln(12) ≈ 2.48 at the start; the reversed half is fully determined by the first half.
        for (const loss of first) assert.ok(loss > 2, `first loss ${loss}`);
        for (const loss of last) assert.ok(loss < 0.05, `final loss ${loss}:\n${run.stdout}`);
    });

    for (const precision of ["fp16", "bf16"] as const) {
        it(`${precision}: 2 ranks train with the model dtype in partitions and gradients, close to fp32`, async () => {
            const extra = precision === "fp16" ? {fp16: {enabled: true, initial_scale_power: 8}} : {bf16: {enabled: true}};
            const expected = await train(1, zeroConfig(2), ["--steps", "5"]);
            const run = await runMixz(["launch", "--nproc", "2", "--master-port", "0", "--config", zeroConfig(1, {}, extra), script, "--steps", "5"], {timeoutMs: 120_000});
            assert.equal(run.code, 0, run.stdout + run.stderr);
            if (precision === "fp16") assert.match(run.stdout, /step 1 lr=0\.001 norm=\S+ scale=256\b/);
            const actual = losses(run.stdout);
            // Rounding the weights to 16 bits moves the losses a little, not more.
            assertSameLosses(expected, actual, precision === "fp16" ? 5e-3 : 3e-2);
        });
    }
});

describe("ZeRO-3: bad input", () => {
    it("a token id outside the vocabulary fails that rank with an error naming it; the job ends, no segment left", async () => {
        const before = shmLeftovers();
        const run = await runMixz(["launch", "--nproc", "2", "--master-port", "0", "--config", zeroConfig(1), script, "--steps", "3", "--bad-token-rank", "1"], {timeoutMs: 60_000});
        assert.equal(run.code, 1, run.stdout + run.stderr);
        assert.match(run.stdout + run.stderr, /error     : batch: inputIds\[4\] = 31 is outside the vocabulary \[0, 31\)/);
        assert.deepEqual(shmLeftovers().filter((name) => !before.includes(name)), []);
    });
});

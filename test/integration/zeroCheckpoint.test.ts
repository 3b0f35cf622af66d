// Checkpoints of the ZeRO-3 engine across real rank processes: resuming gives the losses of not
// stopping (bitwise at the same world size, re-partitioned at another), a save killed at each of
// its stages leaves `latest` loadable and no leftover that breaks later saves, bad checkpoints are
// refused with an error naming the file and change nothing, and an fp16 round trip keeps the
// fp32 master exactly.
import assert from "node:assert/strict";
import {execFileSync} from "node:child_process";
import {cpSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, truncateSync, statSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";

import {fixture, repoRoot, runMixz} from "../helpers/mixzProcess.js";

const script = fixture("integration/fixtures/zeroCheckpoint.ts");
const validator = join(repoRoot, "packages/engine/test/helpers/validate_safetensors.py");
const scratch = mkdtempSync(join(tmpdir(), "mixz-ckpt-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

let configs = 0;
/** One global batch of 12 sequences: micro-batch 2 × accumulation × world. */
function config(world: number, extra: Record<string, unknown> = {}): string {
    const path = join(scratch, `config-${configs++}.json`);
    writeFileSync(path, JSON.stringify({
        train_micro_batch_size_per_gpu: 2,
        gradient_accumulation_steps: 6 / world,
        optimizer: {type: "AdamW", params: {lr: 0.001, weight_decay: 0.01}},
        gradient_clipping: 1.0,
        zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0, reduce_bucket_size: 1000, stage3_prefetch_bucket_size: 3000},
        ...extra
    }));
    return path;
}

interface Run {
    readonly code: number | null;
    readonly output: string;
    /** "step/first" → loss. */
    readonly losses: Map<string, number>;
}

async function launch(nproc: number, configFile: string, args: readonly string[]): Promise<Run> {
    const run = await runMixz(["launch", "--nproc", String(nproc), "--master-port", "0", "--config", configFile, script, ...args], {timeoutMs: 60_000});
    const output = run.stdout + run.stderr;
    const losses = new Map<string, number>();
    for (const match of output.matchAll(/loss step=(\d+) first=(\d+) value=(\S+)/g)) losses.set(`${match[1]}/${match[2]}`, Number(match[3]));
    return {code: run.code, output, losses};
}

async function train(nproc: number, configFile: string, args: readonly string[]): Promise<Run> {
    const run = await launch(nproc, configFile, args);
    assert.equal(run.code, 0, run.output);
    for (let rank = 0; rank < nproc; rank++) assert.match(run.output, new RegExp(`done rank=${rank} world=${nproc}`));
    return run;
}

/** The losses of `expected` from step `from` on against `actual`: the largest relative difference. */
function compareLosses(expected: Map<string, number>, actual: Map<string, number>, from: number, to = Infinity): number {
    const keys = [...expected.keys()].filter((key) => {
        const step = Number(key.split("/")[0]);
        return step >= from && step < to;
    });
    assert.ok(keys.length > 0);
    assert.equal([...actual.keys()].filter((key) => Number(key.split("/")[0]) < to).length, keys.length, "number of losses");
    let worst = 0;
    for (const key of keys) {
        const value = actual.get(key);
        assert.ok(value !== undefined, `no loss for ${key}`);
        worst = Math.max(worst, Math.abs(value - expected.get(key)!) / Math.abs(expected.get(key)!));
    }
    return worst;
}

function manifestOf(dir: string, tag: string): Record<string, unknown> {
    return JSON.parse(readFileSync(join(dir, tag, "mixz_checkpoint.json"), "utf8")) as Record<string, unknown>;
}

/** The independent validator, expecting exactly the tensors of rank `rank`'s slices. */
function validateRankFile(dir: string, tag: string, rank: number): string {
    const manifest = manifestOf(dir, tag) as {worldSize: number; tensors: {paramDType: string; hasMaster: boolean}; parameters: {name: string; numel: number}[]};
    const expect: string[] = [];
    for (const {name, numel} of manifest.parameters) {
        const p = Math.ceil(numel / manifest.worldSize);
        const length = Math.max(0, Math.min((rank + 1) * p, numel) - rank * p);
        expect.push("--expect", `${name}=${manifest.tensors.paramDType}:${length}`);
        for (const kind of [...(manifest.tensors.hasMaster ? ["master"] : []), "exp_avg", "exp_avg_sq"]) expect.push("--expect", `${name}::${kind}=F32:${length}`);
    }
    return execFileSync("python3", [validator, join(dir, tag, `rank_${rank}.safetensors`), ...expect], {encoding: "utf8"});
}

let reference: Run;
const saved = join(scratch, "saved");

before(async () => {
    // Uninterrupted: 10 steps on 2 ranks. Then 5 steps and a save, the checkpoint every test loads.
    reference = await train(2, config(2), ["--steps", "10"]);
    await train(2, config(2), ["--steps", "5", "--save", saved, "--save-at", "5"]);
});

describe("ZeRO-3 checkpoints: resume", () => {
    it("writes DeepSpeed's layout: dir/latest, dir/<tag>/rank_<r>.safetensors and the manifest", () => {
        assert.equal(readFileSync(join(saved, "latest"), "utf8"), "global_step5");
        assert.deepEqual(readdirSync(saved).sort(), ["global_step5", "latest"]);
        assert.deepEqual(readdirSync(join(saved, "global_step5")).sort(), ["mixz_checkpoint.json", "rank_0.safetensors", "rank_1.safetensors"]);
        const manifest = manifestOf(saved, "global_step5");
        assert.equal(manifest["format"], "mixz-zero3-checkpoint");
        assert.equal(manifest["worldSize"], 2);
        assert.equal(manifest["dtype"], "fp32");
        assert.equal(manifest["globalSteps"], 5);
        assert.equal(manifest["microSteps"], 15);
        assert.equal(manifest["optimizerSteps"], 5);
        assert.deepEqual(manifest["lrScheduler"], {last_batch_iteration: 4});
        const files = manifest["files"] as {name: string; bytes: number}[];
        for (const file of files) assert.equal(statSync(join(saved, "global_step5", file.name)).size, file.bytes);
        for (const rank of [0, 1]) assert.match(validateRankFile(saved, "global_step5", rank), /^OK .* 6 metadata keys/);
    });

    it("a new launch that loads it trains steps 5..9 with the uninterrupted losses, bitwise", async () => {
        const resumed = await train(2, config(2), ["--steps", "10", "--load", saved]);
        assert.match(resumed.output, /loaded rank=1 tag=global_step5 world=2 dtype=fp32 globalSteps=5/);
        assert.equal(compareLosses(reference.losses, resumed.losses, 5), 0);
    });

    for (const world of [3, 1]) {
        it(`saved by 2 ranks, resumed by ${world}: re-partitioned, the same losses (≤ 1e-5 relative)`, async () => {
            const resumed = await train(world, config(world), ["--steps", "10", "--load", saved]);
            assert.ok(compareLosses(reference.losses, resumed.losses, 5) <= 1e-5);
        });
    }
});

describe("ZeRO-3 checkpoints: a save killed by SIGKILL", () => {
    const cases = [
        {stage: "rank-files-written", rank: 1, left: /^\.global_step7\.tmp-[0-9a-f]{16}$/},
        {stage: "manifest-written", rank: 0, left: /^\.global_step7\.tmp-[0-9a-f]{16}$/},
        {stage: "renamed", rank: 0, left: /^global_step7$/}
    ] as const;
    for (const {stage, rank, left} of cases) {
        it(`at "${stage}" (rank ${rank}): latest stays the first checkpoint, loads, and later saves work`, async () => {
            const dir = join(scratch, `killed-${stage}`);
            const killed = await launch(2, config(2), ["--steps", "7", "--save", dir, "--save-at", "5,7", "--kill-stage", stage, "--kill-rank", String(rank)]);
            assert.notEqual(killed.code, 0, killed.output);
            assert.match(killed.output, new RegExp(`killing rank=${rank} stage=${stage}`));
            assert.equal(readFileSync(join(dir, "latest"), "utf8"), "global_step5");
            assert.ok(readdirSync(dir).some((name) => left.test(name)), readdirSync(dir).join(" "));

            // Resume from latest, train two steps, save again over the leftovers.
            const resumed = await train(2, config(2), ["--steps", "7", "--load", dir, "--save", dir, "--save-at", "7"]);
            assert.match(resumed.output, /loaded rank=0 tag=global_step5 /);
            assert.equal(compareLosses(reference.losses, resumed.losses, 5, 7), 0);
            assert.deepEqual(readdirSync(dir).sort(), ["global_step5", "global_step7", "latest"]);
            assert.equal(readFileSync(join(dir, "latest"), "utf8"), "global_step7");
            assert.equal(manifestOf(dir, "global_step7")["globalSteps"], 7);
        });
    }
});

describe("ZeRO-3 checkpoints: a crash between the two renames of a replacing save", () => {
    it("the tag's aside directory is loaded while the tag is missing, and the next save puts it back", async () => {
        // What a SIGKILL after moving the old global_step5 aside, before renaming the new one in, leaves.
        const dir = join(scratch, "aside");
        cpSync(saved, dir, {recursive: true});
        renameSync(join(dir, "global_step5"), join(dir, ".global_step5.old-0123456789abcdef"));
        const resumed = await train(2, config(2), ["--steps", "7", "--load", dir, "--save", dir, "--save-at", "7"]);
        assert.match(resumed.output, /loaded rank=0 tag=global_step5 /);
        assert.equal(compareLosses(reference.losses, resumed.losses, 5, 7), 0);
        assert.deepEqual(readdirSync(dir).sort(), ["global_step5", "global_step7", "latest"]);
        assert.equal(manifestOf(dir, "global_step5")["globalSteps"], 5);
    });
});

describe("ZeRO-3 checkpoints: bad input", () => {
    it("another model, a truncated rank file, a missing dir or tag: clear errors, nothing loaded, training goes on", async () => {
        const otherModel = join(scratch, "other-model");
        cpSync(saved, otherModel, {recursive: true});
        const manifestPath = join(otherModel, "global_step5", "mixz_checkpoint.json");
        const manifest = JSON.parse(readFileSync(manifestPath, "utf8")) as {model: {config: {hidden: number}}};
        manifest.model.config.hidden = 32;
        writeFileSync(manifestPath, JSON.stringify(manifest));
        const truncated = join(scratch, "truncated");
        cpSync(saved, truncated, {recursive: true});
        const rankFile = join(truncated, "global_step5", "rank_1.safetensors");
        truncateSync(rankFile, statSync(rankFile).size - 100);
        const missing = join(scratch, "no-such-dir");

        const run = await train(2, config(2), ["--steps", "2", "--bad-load", otherModel, "--bad-load", truncated, "--bad-load", missing, "--bad-load", `${saved}@global_step9`]);
        const errors = [...run.output.matchAll(/load-error rank=(\d) code=(\S+) message=(.*)/g)].map((m) => ({rank: Number(m[1]), code: m[2]!, message: JSON.parse(m[3]!) as string}));
        assert.equal(errors.length, 8, run.output);
        assert.doesNotMatch(run.output, /load-ok|\bchanged rank/);
        assert.equal([...run.output.matchAll(/unchanged rank=\d/g)].length, 8);
        const of = (rank: number, index: number): {code: string; message: string} => errors.filter((e) => e.rank === rank)[index]!;
        for (const rank of [0, 1]) {
            assert.equal(of(rank, 0).code, "MIXZ_ERR_CHECKPOINT_STATE");
            assert.ok(of(rank, 0).message.includes(`${manifestPath}: model.config.hidden: the checkpoint's model has hidden 32, this engine's model has 30`), of(rank, 0).message);
            assert.equal(of(rank, 2).code, "MIXZ_ERR_CHECKPOINT_STATE");
            assert.match(of(rank, 2).message, /no checkpoint directory .*no-such-dir/);
            assert.equal(of(rank, 3).code, "MIXZ_ERR_CHECKPOINT_STATE");
            assert.match(of(rank, 3).message, /no checkpoint with tag "global_step9"/);
        }
        // Only rank 1 reads rank_1.safetensors; rank 0 learns that rank 1 failed and loads nothing either.
        assert.equal(of(1, 1).code, "MIXZ_ERR_SAFETENSORS");
        assert.ok(of(1, 1).message.startsWith(`${rankFile}: `), of(1, 1).message);
        assert.equal(of(0, 1).code, "MIXZ_ERR_CHECKPOINT_STATE");
        assert.match(of(0, 1).message, /rank 1 failed .*nothing was loaded on any rank/);
        // The engine trains on as if no load had been tried: the first steps of the reference.
        assert.equal(compareLosses(reference.losses, run.losses, 0, 2), 0);
    });
});

describe("ZeRO-3 checkpoints: mixed precision", () => {
    const fp16 = {fp16: {enabled: true, initial_scale_power: 8}};
    const dir = join(scratch, "fp16");

    it("fp16: a save and load keep parameters, the fp32 master and Adam's moments exactly", async () => {
        const run = await train(2, config(2, fp16), ["--steps", "3", "--roundtrip", dir]);
        assert.match(run.output, /roundtrip identical rank=0/);
        assert.match(run.output, /roundtrip identical rank=1/);
        const manifest = manifestOf(dir, "roundtrip") as {dtype: string; tensors: unknown; lossScaler: {kind: string}};
        assert.equal(manifest.dtype, "fp16");
        assert.deepEqual(manifest.tensors, {paramDType: "F16", hasMaster: true});
        assert.equal(manifest.lossScaler.kind, "dynamic");
        assert.match(validateRankFile(dir, "roundtrip", 1), /^OK /);
    });

    it("an fp32 engine loads the fp16 checkpoint from its fp32 master", async () => {
        const run = await train(2, config(2), ["--steps", "5", "--load", dir]);
        assert.match(run.output, /loaded rank=0 tag=roundtrip world=2 dtype=fp16 globalSteps=3/);
        for (const loss of run.losses.values()) assert.ok(Number.isFinite(loss) && loss > 2 && loss < 5, String(loss));
    });
});

// Convergence on the demo's LoRA task (packages/examples/src/mixzppDemo.ts, shortened), 2 nodes × 2
// ranks: LoRA with Mixed Precision ZeRO++ (frozen weights int8 + hpZ, configs/mixzpp-local.json)
// ends within 1.1× the final loss of LoRA with unquantized frozen weights and no hpZ (DeepSpeed's
// own bar for MixZ++). Both runs start from the same pretrained base (the first run pretrains it
// and exports it; the second loads that export) and see the same batches in the same order; the
// final loss is rank 0's training loss averaged over the last kLastSteps steps.
import assert from "node:assert/strict";
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";

import {repoRoot, runMixz, type MixzRun} from "../helpers/mixzProcess.js";

const kPretrainSteps = 150;
const kLoraSteps = 80;
const kLastSteps = 10;
/** Final loss of MixZ++ over final loss of the baseline, at most (DeepSpeed's bar). */
const kBar = 1.1;

const demo = join(repoRoot, "packages/examples/src/mixzppDemo.ts");
const hostfile = join(repoRoot, "configs/hostfile.local");
const mixzppConfig = join(repoRoot, "configs/mixzpp-local.json");
const scratch = mkdtempSync(join(tmpdir(), "mixz-convergence-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

/** The demo config with frozen weights kept in the model dtype and no hpZ: ZeRO-3 + LoRA. */
function baselineConfig(): string {
    const config = JSON.parse(readFileSync(mixzppConfig, "utf8")) as {zero_optimization: Record<string, unknown>};
    config.zero_optimization["zero_quantized_nontrainable_weights"] = false;
    config.zero_optimization["zero_hpz_partition_size"] = 1;
    const path = join(scratch, "zero3-lora.json");
    writeFileSync(path, JSON.stringify(config));
    return path;
}

async function launch(config: string, args: readonly string[]): Promise<MixzRun> {
    const run = await runMixz(["launch", "--hostfile", hostfile, "--master-port", "0", "--config", config, demo,
        "--lora-steps", String(kLoraSteps), "--log-every", "1", "--no-samples", ...args], {timeoutMs: 240_000});
    assert.equal(run.code, 0, run.stdout + run.stderr);
    return run;
}

function loraLosses(run: MixzRun): number[] {
    const losses = [...run.stdout.matchAll(/lora-loss (\d+) (\S+)/g)].map((match) => Number(match[2]));
    assert.equal(losses.length, kLoraSteps, run.stdout);
    return losses;
}

const mean = (values: readonly number[]): number => values.reduce((a, b) => a + b, 0) / values.length;

describe("MixZ++ convergence on the demo's LoRA task (2 nodes × 2 ranks)", () => {
    let mixzpp: number[];
    let baseline: number[];

    it("trains LoRA with frozen weights int8 + hpZ from a freshly pretrained base", async () => {
        const run = await launch(mixzppConfig, ["--pretrain-steps", String(kPretrainSteps), "--out", join(scratch, "mixzpp")]);
        assert.match(run.stdout, /quantizeNontrainableParams\(\): \d+ frozen parameters are int8 now/);
        assert.match(run.stdout, /frozen-weight bytes that crossed nodes in steps 2–\d+: 0 /);
        mixzpp = loraLosses(run);
    });

    it("trains LoRA with 16-bit frozen weights and no hpZ from the same base", async () => {
        const run = await launch(baselineConfig(), ["--base", join(scratch, "mixzpp", "base"), "--out", join(scratch, "baseline")]);
        assert.match(run.stdout, /frozen weights kept in the model dtype/);
        baseline = loraLosses(run);
    });

    it(`ends within ${kBar}× the baseline's final loss (mean of the last ${kLastSteps} steps), both having learned`, () => {
        const first = (losses: readonly number[]): number => mean(losses.slice(0, kLastSteps));
        const last = (losses: readonly number[]): number => mean(losses.slice(-kLastSteps));
        const summary = `MixZ++ ${first(mixzpp).toFixed(4)} -> ${last(mixzpp).toFixed(4)}, ZeRO-3 + LoRA ${first(baseline).toFixed(4)} -> ${last(baseline).toFixed(4)}, ` +
            `ratio ${(last(mixzpp) / last(baseline)).toFixed(4)}`;
        console.log(`# convergence: ${summary}`);
        // The task is learnable in this many steps, so the comparison means something.
        assert.ok(last(baseline) < 0.9 * first(baseline), summary);
        assert.ok(last(mixzpp) < 0.9 * first(mixzpp), summary);
        assert.ok(last(mixzpp) <= kBar * last(baseline), summary);
    });
});

// StepMetrics.outsideMs: the part of a step spent outside engine calls — the script's own work,
// above all producing batches. A script that takes 60 ms for its next batch shows it there; one
// that has its batches ready shows almost none; the engine's own time is never counted in it.
import assert from "node:assert/strict";
import {setTimeout as sleep} from "node:timers/promises";
import {describe, it} from "node:test";

import {resolveConfigObject} from "@mixz/config";
import {llama, ZeroEngine, type Batch, type StepMetrics} from "@mixz/engine";
import {disposeAll, inProcessWorld} from "../helpers/inProcessWorld.js";

describe("StepMetrics.outsideMs", () => {
    it("counts the time between engine calls, not the calls", async () => {
        const comms = await inProcessWorld(1, {jobId: `step-metrics-${process.pid}`});
        const config = resolveConfigObject({train_micro_batch_size_per_gpu: 1, gradient_accumulation_steps: 2, optimizer: {type: "AdamW", params: {lr: 0.01}}, zero_optimization: {stage: 3}}, {worldSize: 1}).config;
        const seen: StepMetrics[] = [];
        const engine = await ZeroEngine.create({model: llama({vocabSize: 17, hidden: 12, layers: 2, heads: 3, kvHeads: 1, intermediate: 10, maxSeqLen: 8, seed: 1}), config, communicator: comms[0]!, onStep: (m) => seen.push(m)});
        try {
            const ids = Int32Array.from({length: 8}, (_, i) => i % 17);
            const batch: Batch = {inputIds: ids, labels: ids, shape: [1, 8]};
            const micro = async (delayMs: number): Promise<void> => {
                await sleep(delayMs); // "loading the next batch"
                const loss = await engine.forward(batch);
                await engine.backward(loss);
                await engine.step();
            };
            await micro(0);
            await micro(0); // step 1: the first step's own timing includes engine warm-up
            await micro(60);
            await micro(60); // step 2: two 60 ms waits for data
            await micro(0);
            await micro(0); // step 3: none
            assert.equal(seen.length, 3);
            const [, slow, fast] = seen;
            assert.ok(slow!.outsideMs >= 110 && slow!.outsideMs <= slow!.stepTimeMs, `slow step: ${slow!.outsideMs} of ${slow!.stepTimeMs} ms outside`);
            assert.ok(fast!.outsideMs < 50, `ready batches: ${fast!.outsideMs} ms outside`);
            assert.ok(slow!.stepTimeMs - slow!.outsideMs > 0, "the engine's calls are inside");
        } finally {
            await engine.dispose();
            await disposeAll(comms);
        }
    });
});

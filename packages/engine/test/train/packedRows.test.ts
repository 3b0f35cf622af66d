// Packed rows (Batch.positionIds): several examples in one row attend only to themselves and are
// rotated by their own positions, so a packed row's loss and gradients are those of the same
// examples one per row (padded), up to summation order; bad positions are named.
import assert from "node:assert/strict";
import {describe, it} from "node:test";

import {resolveConfigObject} from "@mixz/config";
import {MixzError} from "@mixz/protocol";
import {llama, ZeroEngine, type Batch, type LlamaConfig} from "@mixz/engine";
import {disposeAll, inProcessWorld} from "../helpers/inProcessWorld.js";

const tiny: LlamaConfig = {vocabSize: 29, hidden: 12, layers: 2, heads: 3, kvHeads: 1, intermediate: 10, maxSeqLen: 16, seed: 6};
let jobs = 0;

async function engine(): Promise<{engine: ZeroEngine; close: () => Promise<void>}> {
    const comms = await inProcessWorld(1, {jobId: `packed-${process.pid}-${jobs++}`});
    const config = resolveConfigObject({
        train_micro_batch_size_per_gpu: 1,
        optimizer: {type: "AdamW", params: {lr: 0.01}},
        zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0}
    }, {worldSize: 1}).config;
    const e = await ZeroEngine.create({model: llama(tiny), config, communicator: comms[0]!});
    return {engine: e, close: async () => {
        await e.dispose();
        await disposeAll(comms);
    }};
}

const a = [3, 7, 11, 2, 9];
const b = [5, 1, 8, 13];
const c = [4, 6];
const seq = 12;

/** a, b and c in one row (positions restart; each example's first label −100), then padding. */
function packed(): Batch {
    const ids = [...a, ...b, ...c, 0];
    const labels = [-100, ...a.slice(1), -100, ...b.slice(1), -100, ...c.slice(1), -100];
    const positions = [...a.keys(), ...b.keys(), ...c.keys(), 0];
    return {inputIds: Int32Array.from(ids), labels: Int32Array.from(labels), shape: [1, seq], positionIds: Int32Array.from(positions)};
}

/** The same examples one per row, padded (labels −100 on padding). */
function padded(): Batch {
    const row = (x: number[]) => [...x, ...new Array(seq - x.length).fill(0)];
    const label = (x: number[]) => [...x, ...new Array(seq - x.length).fill(-100)];
    return {inputIds: Int32Array.from([a, b, c].flatMap(row)), labels: Int32Array.from([a, b, c].flatMap(label)), shape: [3, seq]};
}

function maxRelative(x: Float32Array, y: Float32Array): number {
    let scale = 0;
    let diff = 0;
    for (let i = 0; i < x.length; i++) {
        scale = Math.max(scale, Math.abs(y[i]!));
        diff = Math.max(diff, Math.abs(x[i]! - y[i]!));
    }
    return diff / Math.max(scale, 1e-30);
}

describe("packed rows (positionIds)", () => {
    it("a packed row's loss and every gradient equal the examples' one per row", async () => {
        const one = await engine();
        const two = await engine();
        try {
            const packedLoss = await one.engine.forward(packed());
            const paddedLoss = await two.engine.forward(padded());
            assert.equal(packedLoss.tokens, paddedLoss.tokens, "the same positions count");
            assert.ok(Math.abs(packedLoss.value - paddedLoss.value) <= 1e-6 * paddedLoss.value, `${packedLoss.value} vs ${paddedLoss.value}`);
            await one.engine.backward(packedLoss);
            await two.engine.backward(paddedLoss);
            one.engine.parameters.forEach((p, i) => {
                const error = maxRelative(one.engine.readSlice(i, "grad"), two.engine.readSlice(i, "grad"));
                assert.ok(error <= 1e-5, `${p.name}: ${error}`);
            });
            // Without positions the same row is one sequence: another loss.
            const {positionIds: _unused, ...unpacked} = packed();
            const wrong = await one.engine.evaluate(unpacked);
            assert.ok(Math.abs(wrong.value - paddedLoss.value) > 1e-3, "attention across examples changes the loss");
        } finally {
            await one.close();
            await two.close();
        }
    });

    it("positions that are not 0-then-consecutive per example are named", async () => {
        const {engine: e, close} = await engine();
        try {
            const base = packed();
            const bad = async (positions: number[], message: RegExp) => {
                await assert.rejects(e.forward({...base, positionIds: Int32Array.from(positions)}), (error: unknown) => error instanceof MixzError && message.test(error.message));
            };
            await bad([1, ...new Array(seq - 1).fill(0)], /positionIds\[0\] = 1: a row starts at position 0/);
            await bad([0, 1, 3, ...new Array(seq - 3).fill(0)], /positionIds\[2\] = 3: expected 0 \(a new example\) or 2/);
            await assert.rejects(e.forward({...base, positionIds: new Int32Array(3)}), /positionIds has 3 entries, shape \[1, 12\] needs 12/);
            // The engine trains on afterwards.
            const loss = await e.forward(base);
            await e.backward(loss);
            await e.step();
        } finally {
            await close();
        }
    });
});

// The engine's ZeRO++ policy (train/zeroGroups.ts): which groups exist is decided from the config
// and the world's members alike on every rank, and ZeroEngine.create builds and owns them.
import assert from "node:assert/strict";
import {describe, it} from "node:test";

import {resolveConfigObject, type ResolvedConfig} from "@mixz/config";
import {hpzActive, llama, planZeroPlusPlus, ZeroEngine, type CommMember} from "@mixz/engine";
import {inProcessWorld} from "../helpers/inProcessWorld.js";

function config(zero: Record<string, unknown>, worldSize: number): ResolvedConfig {
    return resolveConfigObject({
        train_micro_batch_size_per_gpu: 1,
        optimizer: {type: "AdamW", params: {lr: 0.01}},
        zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0, ...zero}
    }, {worldSize}).config;
}

function members(...hosts: string[]): CommMember[] {
    return hosts.map((host, rank) => ({rank, host, pid: 1000 + rank}));
}

describe("planZeroPlusPlus", () => {
    it("hpZ is active only for 1 < h < world", () => {
        // Whether h also divides the world and the nodes is the config's rule (hpzPlacementConflicts).
        assert.deepEqual([0, 1, 2, 3, 4, 5].map((h) => hpzActive(h, 4)), [false, false, true, true, false, false]);
        const world = members("a", "a", "b", "b");
        assert.equal(planZeroPlusPlus(config({zero_hpz_partition_size: 2}, 4), world, 0).hpzSize, 2);
        assert.equal(planZeroPlusPlus(config({zero_hpz_partition_size: 1}, 4), world, 0).hpzSize, 1);
        const one = members("a", "a");
        assert.equal(planZeroPlusPlus(config({zero_hpz_partition_size: 2}, 2), one, 1).hpzSize, 1, "h = world holds nothing a primary does not");
    });

    it("qgZ runs with more than one node of equal size, and every rank decides alike", () => {
        const cfg = (n: number) => config({zero_quantized_gradients: true}, n);
        const even = members("a", "a", "b", "b");
        for (let r = 0; r < 4; r++) {
            assert.deepEqual(planZeroPlusPlus(cfg(4), even, r), {hpzSize: 1, quantizedGradients: true, nodes: 2, ranksPerNode: 2, quantizedGradientsFallback: null});
        }
        const uneven = members("a", "a", "b");
        const plans = [0, 1, 2].map((r) => planZeroPlusPlus(cfg(3), uneven, r));
        assert.ok(plans.every((p) => !p.quantizedGradients && /same number of ranks on every node/.test(p.quantizedGradientsFallback ?? "")), JSON.stringify(plans));
        assert.deepEqual(plans.map((p) => p.ranksPerNode), [2, 2, 1]);
        const single = planZeroPlusPlus(cfg(2), members("a", "a"), 0);
        assert.equal(single.quantizedGradients, false, "one node: nothing crosses nodes");
        assert.equal(single.quantizedGradientsFallback, null, "and nothing to warn about");
        assert.equal(planZeroPlusPlus(config({}, 4), even, 0).quantizedGradients, false, "off in the config: off");
    });
});

describe("ZeroEngine.create builds and owns its groups", () => {
    it("2 nodes × 2 ranks, hpZ 2 and qgZ: the engine reports its groups, trains, and disposes them", async () => {
        const comms = await inProcessWorld(4, {jobId: `zero-groups-${process.pid}`, hosts: ["a", "a", "b", "b"]});
        const cfg = config({zero_hpz_partition_size: 2, zero_quantized_gradients: true}, 4);
        const model = llama({vocabSize: 17, hidden: 12, layers: 2, heads: 3, kvHeads: 1, intermediate: 10, maxSeqLen: 8, seed: 5});
        const engines = await Promise.all(comms.map((communicator) => ZeroEngine.create({model, config: cfg, communicator, timeoutMs: 20_000})));
        try {
            for (const engine of engines) {
                assert.equal(engine.hpzSize, 2);
                assert.deepEqual(engine.zeroPlusPlus, {hpzSize: 2, quantizedGradients: true, nodes: 2, ranksPerNode: 2, quantizedGradientsFallback: null});
            }
            const ids = Int32Array.from({length: 4}, (_, i) => (i * 5) % 17);
            const losses = await Promise.all(engines.map(async (engine) => {
                const loss = await engine.forward({inputIds: ids, labels: ids, shape: [1, 4]});
                await engine.backward(loss);
                await engine.step();
                return loss.value;
            }));
            assert.ok(losses.every((l) => Number.isFinite(l) && l === losses[0]), `same data, same loss on every rank: ${losses}`);
            // The step dropped the trainable secondaries; the next forward's world gathers build them
            // again on the hpZ group.
            assert.ok(engines.every((e) => e.parameters.every((p) => !p.hasSecondary)), "a step drops trainable secondaries");
            await Promise.all(engines.map((engine) => engine.evaluate({inputIds: ids, labels: ids, shape: [1, 4]})));
            for (const engine of engines) assert.ok(engine.parameters.some((p) => p.hasSecondary), "secondaries were built on the hpZ group");
        } finally {
            await Promise.all(engines.map((engine) => engine.dispose()));
        }
    });
});

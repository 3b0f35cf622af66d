// ZeroEngine.generate's options for real prompts: stop ids (EOS) end a sequence — its later
// positions hold the pad id, and generation ends once every sequence is done — and topP (nucleus
// sampling; its arithmetic is checked in native/test/sampling_test.cc) with its bad values named.
import assert from "node:assert/strict";
import {describe, it} from "node:test";

import {resolveConfigObject} from "@mixz/config";
import {MixzError} from "@mixz/protocol";
import {llama, ZeroEngine, type LlamaConfig} from "@mixz/engine";
import {disposeAll, inProcessWorld} from "../helpers/inProcessWorld.js";

const tiny: LlamaConfig = {vocabSize: 23, hidden: 12, layers: 2, heads: 3, kvHeads: 1, intermediate: 10, maxSeqLen: 16, seed: 9};

async function withEngine(body: (engine: ZeroEngine) => Promise<void>): Promise<void> {
    const comms = await inProcessWorld(1, {jobId: `generate-${process.pid}`});
    const config = resolveConfigObject({train_micro_batch_size_per_gpu: 1, zero_optimization: {stage: 3}}, {worldSize: 1}).config;
    const engine = await ZeroEngine.create({model: llama(tiny), config, communicator: comms[0]!});
    try {
        await body(engine);
    } finally {
        await engine.dispose();
        await disposeAll(comms);
    }
}

const prompts = Int32Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9);

describe("generate: stop ids and topP", () => {
    it("a stop id ends its sequence; the rest is padding; the other sequences go on", async () => {
        await withEngine(async (engine) => {
            const shape = [3, 3] as const;
            const free = Array.from(await engine.generate(prompts, {shape, maxNewTokens: 8, temperature: 0}));
            const row = (ids: number[], b: number) => ids.slice(b * 8, b * 8 + 8);
            // Sequence 0's third token becomes a stop id (greedy, so the same tokens come again).
            const stop = row(free, 0)[2]!;
            const pad = (stop + 1) % tiny.vocabSize;
            const stopped = Array.from(await engine.generate(prompts, {shape, maxNewTokens: 8, temperature: 0, stopTokenIds: [stop], padTokenId: pad}));
            for (let b = 0; b < 3; b++) {
                const before = row(free, b);
                const first = before.indexOf(stop);
                const expected = first < 0 ? before : [...before.slice(0, first + 1), ...new Array(8 - first - 1).fill(pad)];
                assert.deepEqual(row(stopped, b), expected, `sequence ${b}`);
            }
            assert.ok(row(free, 0).indexOf(stop) <= 2);
        });
    });

    it("every sequence done: the rest is padding, the first stop id by default", async () => {
        await withEngine(async (engine) => {
            const first = Array.from(await engine.generate(Int32Array.of(4, 5), {maxNewTokens: 6, temperature: 0}));
            const stop = first[0]!;
            const out = Array.from(await engine.generate(Int32Array.of(4, 5), {maxNewTokens: 6, temperature: 0, stopTokenIds: [99 % tiny.vocabSize, stop]}));
            assert.deepEqual(out, [stop, ...new Array(5).fill(99 % tiny.vocabSize)]);
        });
    });

    it("topP 1 is sampling without a cut; a tiny topP is greedy; bad values are named", async () => {
        await withEngine(async (engine) => {
            const options = {shape: [3, 3] as const, maxNewTokens: 6, temperature: 0.9, seed: 4};
            const plain = Array.from(await engine.generate(prompts, options));
            assert.deepEqual(Array.from(await engine.generate(prompts, {...options, topP: 1})), plain);
            const greedy = Array.from(await engine.generate(prompts, {...options, temperature: 0}));
            assert.deepEqual(Array.from(await engine.generate(prompts, {...options, topP: 1e-9})), greedy);
            const bad = async (extra: Record<string, unknown>, message: RegExp) =>
                assert.rejects(engine.generate(prompts, {...options, ...extra}), (error: unknown) => error instanceof MixzError && message.test(error.message));
            await bad({topP: 0}, /topP must be in \(0, 1\], got 0/);
            await bad({topP: 1.5}, /topP must be in \(0, 1\], got 1.5/);
            await bad({stopTokenIds: [3, 23]}, /stopTokenIds\[1\] = 23 is not a token id of the vocabulary \[0, 23\)/);
            await bad({padTokenId: -1}, /padTokenId = -1 is not a token id/);
        });
    });
});

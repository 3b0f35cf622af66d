// Token data: sequences cut from the file, shuffled per (seed, epoch), shared out by rank so that
// ranks' batches are disjoint and together the global batch; errors name the file.
import assert from "node:assert/strict";
import {mkdtempSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";

import {MixzError} from "@mixz/protocol";

import {textData, tokenData, tokenDataPermutation, type Batch} from "@mixz/engine";

const scratch = mkdtempSync(join(tmpdir(), "mixz-data-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

/** 103 uint16 tokens: token i is 1000 + i, so a sequence names its own position. */
const tokens16 = join(scratch, "tokens16.bin");
writeFileSync(tokens16, Buffer.from(Uint16Array.from({length: 103}, (_, i) => 1000 + i).buffer));

function firsts(batches: Iterable<Batch>): number[][] {
    return [...batches].map((b) => Array.from({length: b.shape[0]}, (_, k) => b.inputIds[k * b.shape[1]]!));
}

function throwsData(fn: () => unknown, code: string, message: RegExp): void {
    assert.throws(fn, (error: unknown) => {
        assert.ok(error instanceof MixzError, String(error));
        assert.equal(error.code, code);
        assert.match(error.message, message);
        return true;
    });
}

describe("data.tokens", () => {
    it("cuts whole sequences, labels = inputs, and shares each global batch out by rank", () => {
        const options = {seqLen: 10, dtype: "uint16", microBatch: 2, worldSize: 2, seed: 3} as const;
        const r0 = tokenData(tokens16, {...options, rank: 0});
        const r1 = tokenData(tokens16, {...options, rank: 1});
        assert.equal(r0.tokens, 103);
        assert.equal(r0.sequences, 10);
        assert.equal(r0.batchesPerEpoch, 2); // 10 sequences / (2 ranks × 2)
        const b = [...r0][0]!;
        assert.deepEqual(b.shape, [2, 10]);
        assert.deepEqual(b.labels, b.inputIds);
        assert.notEqual(b.labels, b.inputIds);
        for (let k = 0; k < 2; k++) {
            const first = b.inputIds[k * 10]!;
            assert.equal((first - 1000) % 10, 0, "a sequence starts at a multiple of seqLen");
            assert.deepEqual(Array.from(b.inputIds.subarray(k * 10, k * 10 + 10)), Array.from({length: 10}, (_, i) => first + i));
        }
        // Disjoint across ranks, together the first 8 positions of the epoch's order.
        const order = tokenDataPermutation(10, 3, 0);
        const all = [...firsts(r0), ...firsts(r1)].flat().map((id) => (id - 1000) / 10).sort((x, y) => x - y);
        assert.deepEqual(all, Array.from(order.subarray(0, 8)).sort((x, y) => x - y));
        assert.deepEqual(firsts(r0).flat().map((id) => (id - 1000) / 10), [order[0], order[1], order[4], order[5]]);
        // The global batch does not depend on the split: 1 rank × micro 4 sees the same sequences per step.
        const single = firsts(tokenData(tokens16, {...options, microBatch: 4, worldSize: 1, rank: 0}));
        assert.deepEqual(single[0]!.sort(), [...firsts(r0)[0]!, ...firsts(r1)[0]!].sort());
    });

    it("is deterministic per seed, reshuffles per epoch, and resumes from startBatch", () => {
        const options = {seqLen: 10, dtype: "uint16", microBatch: 1, worldSize: 1, rank: 0, epochs: 3} as const;
        const a = firsts(tokenData(tokens16, {...options, seed: 7}));
        assert.equal(a.length, 30);
        assert.deepEqual(firsts(tokenData(tokens16, {...options, seed: 7})), a);
        assert.notDeepEqual(firsts(tokenData(tokens16, {...options, seed: 8})), a);
        assert.notDeepEqual(a.slice(0, 10), a.slice(10, 20));
        assert.deepEqual(a.slice(0, 10).flat().sort(), a.slice(10, 20).flat().sort(), "each epoch visits every sequence once");
        assert.deepEqual(firsts(tokenData(tokens16, {...options, seed: 7, startBatch: 12})), a.slice(12));
        assert.deepEqual(firsts(tokenData(tokens16, {...options, shuffle: false, epochs: 1})).flat(), Array.from({length: 10}, (_, i) => 1000 + i * 10));
        const endless = tokenData(tokens16, {...options, epochs: Infinity});
        assert.equal(endless.length, Infinity);
        let n = 0;
        for (const _ of endless) if (++n === 25) break;
        assert.equal(n, 25);
    });

    it("uint32 ids and the vocabulary check", () => {
        const file = join(scratch, "tokens32.bin");
        writeFileSync(file, Buffer.from(Uint32Array.from({length: 40}, (_, i) => (i === 33 ? 70_000 : i)).buffer));
        const ok = tokenData(file, {seqLen: 8, dtype: "uint32", microBatch: 1, worldSize: 1, rank: 0, shuffle: false});
        assert.equal([...ok][4]!.inputIds[1], 70_000);
        throwsData(() => tokenData(file, {seqLen: 8, dtype: "uint32", microBatch: 1, worldSize: 1, rank: 0, vocabSize: 50_000}),
            "MIXZ_ERR_DATA", /tokens32\.bin: token 33 \(byte offset 132\) is id 70000, outside the vocabulary \[0, 50000\)/);
    });

    it("bad files and options are refused, naming the file", () => {
        const odd = join(scratch, "odd.bin");
        writeFileSync(odd, Buffer.alloc(41));
        throwsData(() => tokenData(odd, {seqLen: 4, dtype: "uint16", microBatch: 1, worldSize: 1, rank: 0}), "MIXZ_ERR_DATA", /odd\.bin: 41 bytes is not a multiple of 2 \(uint16 ids\)/);
        throwsData(() => tokenData(tokens16, {seqLen: 30, dtype: "uint16", microBatch: 2, worldSize: 2, rank: 0}),
            "MIXZ_ERR_DATA", /tokens16\.bin: too short: 103 tokens make 3 sequences of 30, one batch of 2 rank\(s\) × microBatch 2 needs 4/);
        throwsData(() => tokenData(join(scratch, "absent.bin"), {seqLen: 4, dtype: "uint16", microBatch: 1, worldSize: 1, rank: 0}), "MIXZ_ERR_FILE_READ", /absent\.bin: cannot read the token file \(ENOENT\)/);
        throwsData(() => tokenData(tokens16, {seqLen: 4, dtype: "int8" as "uint16", microBatch: 1, worldSize: 1, rank: 0}), "MIXZ_ERR_DATA", /dtype: must be "uint16" or "uint32"/);
        throwsData(() => tokenData(tokens16, {seqLen: 4, dtype: "uint16", microBatch: 1, worldSize: 2, rank: 2}), "MIXZ_ERR_DATA", /rank: must be an integer in \[0, 1\]/);
    });
});

describe("data.text", () => {
    it("bytes are tokens 0–255", () => {
        const file = join(scratch, "text.txt");
        writeFileSync(file, "hello, world! ".repeat(10));
        const text = textData(file, {seqLen: 7, microBatch: 2, worldSize: 1, rank: 0, shuffle: false});
        assert.equal(text.sequences, 20);
        const [first] = text;
        assert.equal(Buffer.from(Uint8Array.from(first!.inputIds.subarray(0, 7))).toString(), "hello, ");
    });
});

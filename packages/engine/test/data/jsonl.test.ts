// JSONL instruction data: masks per format (exact label arrays), padding, EOS, sharding by rank,
// shuffles per seed/epoch, every bad line's `file:line` message, the packing refusal, and the data
// position saved in a checkpoint and restored after loadCheckpoint.
import assert from "node:assert/strict";
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";

import {resolveConfigObject} from "@mixz/config";
import {ErrorCodes, MixzError} from "@mixz/protocol";

import {jsonlData, llama, tokenDataPermutation, ZeroEngine, type Batch, type ChatMessage, type JsonlDataOptions, type TextTokenizer} from "@mixz/engine";
import {inProcessWorld} from "../helpers/inProcessWorld.js";

const scratch = mkdtempSync(join(tmpdir(), "mixz-jsonl-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

const BOS = 1;
const EOS = 2;
const I = -100;

/**
 * A byte-level fake: byte b is id b + 3, "<s>" is BOS and "</s>" EOS; its chat template writes
 * "<s>" then `${role[0]}:${content}</s>` per message and "a:" as the generation prompt.
 */
function fakeTokenizer(extra: Partial<TextTokenizer> = {}): TextTokenizer {
    return {
        encode(text: string, options?: {addSpecialTokens?: boolean}): number[] {
            const ids: number[] = options?.addSpecialTokens === false ? [] : [BOS];
            for (const part of text.split(/(<s>|<\/s>)/)) {
                if (part === "<s>") ids.push(BOS);
                else if (part === "</s>") ids.push(EOS);
                else for (const byte of Buffer.from(part, "utf8")) ids.push(byte + 3);
            }
            return ids;
        },
        applyChatTemplate(messages: readonly ChatMessage[], options?: {addGenerationPrompt?: boolean}): string {
            return `<s>${messages.map((m) => `${m.role[0]}:${m.content}</s>`).join("")}${options?.addGenerationPrompt === true ? "a:" : ""}`;
        },
        bosTokenId: BOS,
        eosTokenIds: [EOS],
        padTokenId: null,
        ...extra
    };
}

/** The fake's ids of a plain string. */
function b(text: string): number[] {
    return [...Buffer.from(text, "utf8")].map((byte) => byte + 3);
}

function file(name: string, lines: readonly (string | object)[]): string {
    const path = join(scratch, name);
    writeFileSync(path, lines.map((line) => (typeof line === "string" ? line : JSON.stringify(line))).join("\n") + "\n");
    return path;
}

function base(extra: Partial<JsonlDataOptions> = {}): JsonlDataOptions {
    return {tokenizer: fakeTokenizer(), format: "text", seqLen: 16, microBatch: 1, rank: 0, worldSize: 1, shuffle: false, ...extra};
}

function rows(batch: Batch): {ids: number[]; labels: number[]}[] {
    const [m, s] = batch.shape;
    return Array.from({length: m}, (_, k) => ({ids: Array.from(batch.inputIds.subarray(k * s, (k + 1) * s)), labels: Array.from(batch.labels!.subarray(k * s, (k + 1) * s))}));
}

function pad(values: number[], length: number, fill: number): number[] {
    return [...values, ...Array<number>(length - values.length).fill(fill)];
}

/** Which example a "text" row is: its bytes between BOS and EOS. */
function textOf(ids: number[]): string {
    const end = ids.indexOf(EOS, 1);
    return Buffer.from(ids.slice(1, end).map((id) => id - 3)).toString("utf8");
}

async function throwsExactly(fn: () => unknown, code: string, message: string): Promise<void> {
    await assert.rejects(async () => {
        await fn();
    }, (error: unknown) => {
        assert.ok(error instanceof MixzError, String(error));
        assert.equal(error.code, code);
        assert.equal(error.category, "user");
        assert.equal(error.message, message);
        return true;
    });
}

describe("data.jsonl: masking per format", () => {
    it('"text": BOS + tokens + EOS, the loss on every token, padding with EOS (no pad id) and labels −100 there', async () => {
        const batches = (await jsonlData(file("text.jsonl", [{text: "hi"}]), base({seqLen: 8})));
        assert.equal(batches.examples, 1);
        const [batch] = [...batches];
        assert.deepEqual(batch!.shape, [1, 8]);
        const [row] = rows(batch!);
        assert.deepEqual(row!.ids, [BOS, ...b("hi"), EOS, EOS, EOS, EOS, EOS]);
        assert.deepEqual(row!.labels, [BOS, ...b("hi"), EOS, I, I, I, I]);
        // A byte-order mark and CRLF line ends change nothing.
        const crlf = join(scratch, "crlf.jsonl");
        writeFileSync(crlf, '\uFEFF{"text": "hi"}\r\n\r\n');
        assert.deepEqual([...(await jsonlData(crlf, base({seqLen: 8})))], [batch]);
    });

    it('"prompt_completion": the loss on the completion and its EOS only; padTokenId pads', async () => {
        const batches = (await jsonlData(file("pc.jsonl", [{prompt: "Q?", completion: "A"}]), base({format: "prompt_completion", seqLen: 8, tokenizer: fakeTokenizer({padTokenId: 0})})));
        const [row] = rows([...batches][0]!);
        assert.deepEqual(row!.ids, [BOS, ...b("Q?"), ...b("A"), EOS, 0, 0, 0]);
        assert.deepEqual(row!.labels, [I, I, I, ...b("A"), EOS, I, I, I]);
    });

    it('"messages": the chat template renders the conversation, the loss on assistant turns (with their closing EOS) only', async () => {
        const messages = [
            {role: "system", content: "S"},
            {role: "user", content: "hi"},
            {role: "assistant", content: "yo"},
            {role: "user", content: "ok"},
            {role: "assistant", content: "k"}
        ];
        const batches = (await jsonlData(file("chat.jsonl", [{messages}]), base({format: "messages", seqLen: 24})));
        const [row] = rows([...batches][0]!);
        // "<s>s:S</s>u:hi</s>a:yo</s>u:ok</s>a:k</s>"
        const ids = [BOS, ...b("s:S"), EOS, ...b("u:hi"), EOS, ...b("a:yo"), EOS, ...b("u:ok"), EOS, ...b("a:k"), EOS];
        assert.deepEqual(row!.ids, pad(ids, 24, EOS));
        const labels = [I, ...b("s:S").map(() => I), I, ...b("u:hi").map(() => I), I, I, I, ...b("yo"), EOS, ...b("u:ok").map(() => I), I, I, I, ...b("k"), EOS];
        assert.deepEqual(row!.labels, pad(labels, 24, I));
    });

    it('"messages" refuses a template that is not prefix-stable, naming the line and message', async () => {
        const counting = fakeTokenizer({
            applyChatTemplate: (messages: readonly ChatMessage[], options?: {addGenerationPrompt?: boolean}) =>
                `<s>${messages.length}${messages.map((m) => `${m.role[0]}:${m.content}</s>`).join("")}${options?.addGenerationPrompt === true ? "a:" : ""}`
        });
        const path = file("unstable.jsonl", [{messages: [{role: "user", content: "hi"}, {role: "assistant", content: "yo"}]}]);
        await throwsExactly(() => jsonlData(path, base({format: "messages", tokenizer: counting})), ErrorCodes.data,
            `${path}:1: the chat template is not prefix-stable at messages[1] (rendering the first messages is not a prefix of rendering more of them), ` +
                'so the assistant turn cannot be located; use format "prompt_completion" with the prompt rendered by the template');
    });

    it("truncation: true keeps the first seqLen tokens and counts the examples it cut", async () => {
        const batches = (await jsonlData(file("long.jsonl", [{prompt: "ab", completion: "cdefgh"}]), base({format: "prompt_completion", seqLen: 5, truncation: true})));
        assert.equal(batches.truncated, 1);
        const [row] = rows([...batches][0]!);
        assert.deepEqual(row!.ids, [BOS, ...b("abcd")]);
        assert.deepEqual(row!.labels, [I, I, I, ...b("cd")]);
    });
});

describe("data.jsonl: order and shards", () => {
    const names = Array.from({length: 9}, (_, i) => `e${i}`);
    const nine = file("nine.jsonl", names.map((text) => ({text})));

    async function seen(options: Partial<JsonlDataOptions>): Promise<string[][]> {
        return [...(await jsonlData(nine, base({seqLen: 8, shuffle: true, ...options})))].map((batch) => rows(batch).map((row) => textOf(row.ids)));
    }

    it("each rank its own shard: disjoint, together each global batch, the epoch's order by position", async () => {
        const r0 = await seen({rank: 0, worldSize: 2, microBatch: 2, seed: 4});
        const r1 = await seen({rank: 1, worldSize: 2, microBatch: 2, seed: 4});
        assert.equal(r0.length, 2); // floor(9 / (2 × 2)) batches per epoch, the same on each rank
        assert.equal(r1.length, 2);
        const order = Array.from(tokenDataPermutation(9, 4, 0), (i) => `e${i}`);
        assert.deepEqual(r0, [[order[0], order[1]], [order[4], order[5]]]);
        assert.deepEqual(r1, [[order[2], order[3]], [order[6], order[7]]]);
        const all = [...r0.flat(), ...r1.flat()];
        assert.equal(new Set(all).size, 8, "disjoint");
        // The global batch does not depend on the split of W·m.
        const single = await seen({rank: 0, worldSize: 1, microBatch: 4, seed: 4});
        assert.deepEqual(single.map((batch) => [...batch].sort()), [0, 1].map((t) => [...r0[t]!, ...r1[t]!].sort()));
    });

    it("covers every example once per epoch when W·m divides them; deterministic per seed, reshuffled per epoch", async () => {
        const eight = file("eight.jsonl", names.slice(0, 8).map((text) => ({text})));
        const shards = (seed: number, epochs: number): Promise<string[][][]> =>
            Promise.all([0, 1, 2, 3].map(async (rank) => [...(await jsonlData(eight, base({seqLen: 8, shuffle: true, rank, worldSize: 4, microBatch: 1, seed, epochs})))].map((batch) => rows(batch).map((row) => textOf(row.ids)))));
        const a = await shards(7, 3);
        assert.deepEqual(await shards(7, 3), a);
        assert.notDeepEqual(await shards(8, 3), a);
        for (let epoch = 0; epoch < 3; epoch++) {
            const visited = a.flatMap((rank) => rank.slice(epoch * 2, epoch * 2 + 2).flat()).sort();
            assert.deepEqual(visited, names.slice(0, 8), `epoch ${epoch}`);
        }
        const epoch0 = a.map((rank) => rank.slice(0, 2));
        const epoch1 = a.map((rank) => rank.slice(2, 4));
        assert.notDeepEqual(epoch0, epoch1);
        assert.deepEqual((await seen({shuffle: false, epochs: 1})).flat(), names);
    });

    it("iteration continues from the position; startBatch, length, and endless epochs", async () => {
        const batches = (await jsonlData(nine, base({seqLen: 8, shuffle: true, seed: 2, epochs: 2})));
        assert.equal(batches.length, 18);
        const all = [...(await jsonlData(nine, base({seqLen: 8, shuffle: true, seed: 2, epochs: 2})))].map((batch) => textOf(rows(batch)[0]!.ids));
        const first: string[] = [];
        for (const batch of batches) {
            first.push(textOf(rows(batch)[0]!.ids));
            if (first.length === 5) break;
        }
        assert.equal(batches.position().batch, 5);
        assert.equal(batches.length, 13);
        const rest = [...batches].map((batch) => textOf(rows(batch)[0]!.ids));
        assert.deepEqual([...first, ...rest], all);
        assert.equal(batches.length, 0);
        assert.deepEqual([...(await jsonlData(nine, base({seqLen: 8, shuffle: true, seed: 2, epochs: 2, startBatch: 11})))].map((batch) => textOf(rows(batch)[0]!.ids)), all.slice(11));
        const endless = (await jsonlData(nine, base({seqLen: 8, epochs: Infinity})));
        assert.equal(endless.length, Infinity);
        let n = 0;
        for (const _ of endless) if (++n === 20) break;
        assert.equal(endless.position().epoch, 2);
    });
});

describe("data.jsonl: errors", () => {
    it("every bad line, `file:line: …` one a line, before anything is yielded", async () => {
        const lines = [
            {prompt: "a", completion: "b"},
            "not json",
            "[1, 2]",
            {prompt: "a"},
            {prompt: 3, completion: "b"},
            "",
            {prompt: "a long prompt", completion: "b"}
        ];
        const path = file("bad.jsonl", lines);
        let parseMessage = "";
        try {
            JSON.parse("not json");
        } catch (error) {
            parseMessage = (error as Error).message;
        }
        await throwsExactly(() => jsonlData(path, base({format: "prompt_completion", seqLen: 8})), ErrorCodes.data, [
            `${path}:2: not JSON (${parseMessage})`,
            `${path}:3: not a JSON object (got an array); each line is one example object`,
            `${path}:4: format "prompt_completion" needs a "completion" field (the line has "prompt")`,
            `${path}:5: "prompt" must be a string, got number`,
            `${path}:7: example has 16 tokens, seqLen is 8; shorten it or pass truncation: true`
        ].join("\n"));
    });

    it("bad messages lines and a file with no examples", async () => {
        const path = file("badchat.jsonl", [
            {text: "x"},
            {messages: []},
            {messages: [{role: "user"}]},
            {messages: [{role: "user", content: "hi"}]},
            {messages: ["hi"]}
        ]);
        await throwsExactly(() => jsonlData(path, base({format: "messages"})), ErrorCodes.data, [
            `${path}:1: format "messages" needs a "messages" field (the line has "text")`,
            `${path}:2: "messages" must be a non-empty array of {"role", "content"} objects, got an array`,
            `${path}:3: messages[0].content must be a string, got nothing`,
            `${path}:4: no "assistant" message: nothing to train on`,
            `${path}:5: messages[0] must be a {"role", "content"} object, got string`
        ].join("\n"));
        const empty = join(scratch, "empty.jsonl");
        writeFileSync(empty, "\n  \n");
        await throwsExactly(() => jsonlData(empty, base()), ErrorCodes.data, `${empty}:1: no examples: the file is empty (a JSONL file holds one JSON object per line)`);
        const short = file("short.jsonl", [{text: "a"}, {text: "b"}, {text: "c"}]);
        await throwsExactly(() => jsonlData(short, base({worldSize: 2, microBatch: 2})), ErrorCodes.data, `${short}: too short: 3 example(s), one batch of 2 rank(s) × microBatch 2 needs 4`);
    });

    it("options: an unknown format, a tokenizer without EOS, a missing file", async () => {
        const path = file("one.jsonl", [{text: "a"}]);
        await throwsExactly(() => jsonlData(path, base({format: "chat" as "text"})), ErrorCodes.data, 'data.jsonl: format: must be "text", "prompt_completion" or "messages", got "chat"');
        await throwsExactly(() => jsonlData(path, base({tokenizer: fakeTokenizer({eosTokenIds: []})})), ErrorCodes.data,
            'data.jsonl: tokenizer: has no EOS token (eosTokenIds is empty): format "text" appends one after each example');
        await assert.rejects(jsonlData(join(scratch, "missing.jsonl"), base()), (error: unknown) => error instanceof MixzError && error.code === ErrorCodes.fileRead);
    });
});

describe("data.jsonl: packing", () => {
    it("next-fit rows: positions restart per example, each example's first label is −100, the rest of a row is its own padding", async () => {
        // Ids per example: BOS + bytes + EOS: "ab" → 4 tokens, "cde" → 5, "f" → 3, "ghij" → 6.
        const path = file("pack.jsonl", [{text: "ab"}, {text: "cde"}, {text: "f"}, {text: "ghij"}]);
        const batches = await jsonlData(path, base({seqLen: 10, packing: true, microBatch: 1}));
        assert.equal(batches.examples, 4);
        assert.equal(batches.rows, 2, "ab + cde fit in 10; f + ghij in the next row");
        const got = [...batches];
        assert.equal(got.length, 2);
        const expectRow = (parts: string[]) => {
            const ids = parts.flatMap((t) => [BOS, ...b(t), EOS]);
            const labels = parts.flatMap((t) => [-100, ...b(t), EOS]);
            const positions = parts.flatMap((t) => Array.from({length: t.length + 2}, (_, i) => i));
            const padding = 10 - ids.length;
            return {
                ids: [...ids, ...new Array(padding).fill(EOS)],
                labels: [...labels, ...new Array(padding).fill(-100)],
                positions: [...positions, ...Array.from({length: padding}, (_, i) => i)]
            };
        };
        for (const [k, parts] of [["ab", "cde"], ["f", "ghij"]].entries()) {
            const expected = expectRow(parts);
            assert.deepEqual(Array.from(got[k]!.inputIds), expected.ids, `row ${k} ids`);
            assert.deepEqual(Array.from(got[k]!.labels!), expected.labels, `row ${k} labels`);
            assert.deepEqual(Array.from(got[k]!.positionIds!), expected.positions, `row ${k} positions`);
        }
        // Packed rows shard and shuffle like examples: 2 ranks get disjoint rows.
        const r0 = [...(await jsonlData(path, base({seqLen: 10, packing: true, rank: 0, worldSize: 2, shuffle: true, seed: 1})))];
        const r1 = [...(await jsonlData(path, base({seqLen: 10, packing: true, rank: 1, worldSize: 2, shuffle: true, seed: 1})))];
        assert.equal(r0.length, 1);
        assert.notDeepEqual(Array.from(r0[0]!.inputIds), Array.from(r1[0]!.inputIds));
    });
});

describe("data.jsonl: the data position in checkpoints", () => {
    const tiny = {vocabSize: 260, hidden: 12, layers: 1, heads: 3, kvHeads: 1, intermediate: 10, maxSeqLen: 16, seed: 5};
    const config = resolveConfigObject({
        train_micro_batch_size_per_gpu: 2,
        gradient_accumulation_steps: 1,
        optimizer: {type: "AdamW", params: {lr: 0.01}},
        zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0}
    }, {worldSize: 1}).config;
    let jobs = 0;
    async function engine(): Promise<ZeroEngine> {
        const [communicator] = await inProcessWorld(1, {jobId: `jsonl-${process.pid}-${jobs++}`});
        return ZeroEngine.create({model: llama(tiny), config, communicator: communicator!, timeoutMs: 20_000});
    }

    it("saveCheckpoint stores position(), loadCheckpoint returns it, restore() continues the same batches", async () => {
        const path = file("resume.jsonl", Array.from({length: 6}, (_, i) => ({prompt: `q${i}`, completion: `answer ${i}`})));
        const options = base({format: "prompt_completion", seqLen: 16, microBatch: 2, shuffle: true, seed: 3, epochs: 2});
        const expected = [...(await jsonlData(path, options))];
        const dir = mkdtempSync(join(scratch, "ckpt-"));
        const first = await engine();
        const batches = (await jsonlData(path, options));
        let steps = 0;
        for (const batch of batches) {
            const loss = await first.forward(batch);
            assert.equal(loss.tokens, rows(batch).reduce((n, row) => n + row.labels.slice(1).filter((l) => l !== I).length, 0));
            await first.backward(loss);
            await first.step();
            if (++steps === 4) break;
        }
        const saved = await first.saveCheckpoint(dir, {dataPosition: batches.position()});
        assert.deepEqual(saved.dataPosition, batches.position());
        const manifest = JSON.parse(readFileSync(join(saved.path, "mixz_checkpoint.json"), "utf8")) as {dataPosition: unknown};
        assert.deepEqual(manifest.dataPosition, batches.position());
        await first.dispose();

        const second = await engine();
        const info = await second.loadCheckpoint(dir);
        const resumed = (await jsonlData(path, options));
        resumed.restore(info.dataPosition);
        assert.equal(resumed.position().batch, 4);
        assert.equal(resumed.position().epoch, 1);
        assert.deepEqual([...resumed], expected.slice(4));

        // Other data, order or global batch are refused; a save without a position loads without one.
        const other = (await jsonlData(path, {...options, seed: 4}));
        assert.throws(() => other.restore(info.dataPosition), /data\.jsonl: restore: the position was saved with seed 3, shuffle true; this loader has seed 4/);
        const smaller = await jsonlData(path, {...options, microBatch: 1});
        assert.throws(() => smaller.restore(info.dataPosition), /global batch of 2 examples .* this loader's is 1/);
        assert.throws(() => resumed.restore({batch: 1}), /not a position of data\.jsonl/);
        await assert.rejects(second.saveCheckpoint(dir, {tag: "bad", dataPosition: 10n}), /dataPosition must be a JSON value/);
        await second.saveCheckpoint(dir, {tag: "plain"});
        assert.equal("dataPosition" in (await second.loadCheckpoint(dir, {tag: "plain"})), false);
        await second.dispose();
    });
});

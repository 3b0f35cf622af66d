/**
 * Instruction-tuning data from a JSON Lines file: one example per line, tokenized, masked so that
 * the loss counts only what the model should learn to write, padded to seqLen, sharded by rank.
 *
 * Formats (one JSON object per line; blank lines are skipped):
 *   - "text"              {"text": "…"}: loss on every token;
 *   - "prompt_completion" {"prompt": "…", "completion": "…"}: loss on the completion's tokens and the
 *                         EOS appended after it (TRL's completion_only_loss);
 *   - "messages"          {"messages": [{"role": "…", "content": "…"}, …]}: the conversation rendered
 *                         by the tokenizer's chat template, the loss on the assistant turns only.
 * Tokens: "text" and "prompt_completion" are [BOS when the tokenizer has one] + encode(text or
 * prompt, without special tokens) [+ encode(completion, without special tokens)] + EOS
 * (eosTokenIds[0]); prompt and completion are tokenized apart, as TRL does, so the boundary is exact.
 * "messages" is encode(applyChatTemplate(messages), without special tokens): the template writes
 * BOS/EOS and turn markers itself, as Hugging Face's apply_chat_template(tokenize=True) does.
 *
 * Assistant spans ("messages"): for assistant message i, A = the tokens of messages[0..i) rendered
 * with addGenerationPrompt: true and B = the tokens of messages[0..i] rendered without it; tokens
 * [|A|, |B|) of the conversation are the turn (its content and whatever the template closes the turn
 * with, e.g. <|eot_id|>: the model learns to stop). This assumes the template is prefix-stable:
 * rendering a conversation's first messages gives a prefix of rendering all of them (true of the
 * LLaMA-3, ChatML/Qwen, Mistral and Gemma templates; false of templates that, say, move a system
 * prompt or date depending on the last message, or strip reasoning from earlier turns); A must be a
 * prefix of B and B of the whole conversation's tokens, else the line is refused naming the message.
 *
 * Labels are the input ids (the engine shifts them, as Hugging Face causal LMs do) with −100 where
 * the loss does not count: prompts, non-assistant turns, padding. packing: false (the default)
 * puts one example per row, right-padded to seqLen with padTokenId ?? eosTokenIds[0] ?? 0; packing:
 * true fills rows with several examples (packRows) and yields their positionIds, with which the
 * engine keeps attention inside each example (the CPU backend; the CUDA backend refuses them yet). An example longer than seqLen is an error unless truncation: true, which keeps
 * its first seqLen tokens (its labels too: a prompt that fills seqLen leaves nothing to train).
 *
 * Order and sharding are data.tokens' scheme over examples instead of sequences (see data.ts):
 * epoch e visits the N examples in permutation(N, seed, e) order (file order with shuffle: false);
 * global batch t of an epoch is positions [t·W·m, (t+1)·W·m) of it and rank r takes
 * [t·W·m + r·m, t·W·m + (r+1)·m); floor(N / (W·m)) batches per epoch on every rank.
 *
 * The file is read once and every line is parsed, checked and tokenized up front (tokenization is
 * eager: memory grows with the file — fine for fine-tuning sets, not for pre-training corpora), so
 * every bad line is reported, `file:line: …` one a line, before the first batch is yielded.
 *
 * Resuming: position() is a JSON value naming the next global batch (the same on every rank); pass
 * it to engine.saveCheckpoint(dir, {dataPosition: batches.position()}) and hand what
 * loadCheckpoint returns as `dataPosition` to batches.restore(): iteration then goes on from there.
 */
import {createHash} from "node:crypto";
import {readFileSync} from "node:fs";
import {resolve} from "node:path";

import {ErrorCodes, InputError, MixzError, type Problem} from "@mixz/protocol";

import type {Batch} from "../train/ZeroEngine.js";
import {optionBoolean, optionError, permutation, readError, shardOptions} from "./data.js";

/** One message of a conversation. */
export interface ChatMessage {
    readonly role: string;
    readonly content: string;
}

/**
 * What data.jsonl needs of a tokenizer (structural: any object with these members will do, e.g.
 * @mixz/tokenizers' Tokenizer). encode returns the ids as any ArrayLike<number> — a number[] or an
 * Int32Array — each an integer in [0, 2^31). applyChatTemplate renders a conversation as text (it
 * is only called for format "messages"; tokenize is never true here).
 */
export interface TextTokenizer {
    encode(text: string, options?: {readonly addSpecialTokens?: boolean}): ArrayLike<number> | Promise<ArrayLike<number>>;
    applyChatTemplate(messages: readonly ChatMessage[], options?: {readonly addGenerationPrompt?: boolean; readonly tokenize?: false}): string;
    readonly bosTokenId: number | null;
    readonly eosTokenIds: readonly number[];
    readonly padTokenId: number | null;
}

export type JsonlFormat = "text" | "prompt_completion" | "messages";

export interface JsonlDataOptions {
    readonly tokenizer: TextTokenizer;
    readonly format: JsonlFormat;
    /** Tokens per row (the batch's shape[1]). */
    readonly seqLen: number;
    /** Examples per batch on this rank (the batch's shape[0]): train_micro_batch_size_per_gpu. */
    readonly microBatch: number;
    /** This rank and the world size (the mixz facade fills them in from runtime). */
    readonly rank: number;
    readonly worldSize: number;
    /** Several examples per row (Batch.positionIds; see packRows); default false. */
    readonly packing?: boolean;
    /** Keep the first seqLen tokens of a longer example instead of refusing the line; default false. */
    readonly truncation?: boolean;
    /** Seeds the order of each epoch; default 0. */
    readonly seed?: number;
    /** Default true; false visits the examples in file order. */
    readonly shuffle?: boolean;
    /** Epochs to yield; default 1; Infinity for an endless stream. */
    readonly epochs?: number;
    /** The global batch to start from (resuming a run without a checkpoint's position); default 0. */
    readonly startBatch?: number;
}

/** Where a JSONL loader stands: a JSON value for checkpoints (engine.saveCheckpoint's dataPosition). */
export interface JsonlDataPosition {
    readonly kind: "mixz-data-jsonl";
    readonly version: 1;
    /** Global batches consumed (the next one to yield); epoch = floor(batch / batchesPerEpoch). */
    readonly batch: number;
    readonly epoch: number;
    /** What the position means only for the same data and order: checked by restore(). */
    readonly examples: number;
    readonly globalBatch: number;
    readonly seed: number;
    readonly shuffle: boolean;
    /** The first 16 hex digits of the file's SHA-256. */
    readonly sha256: string;
}

/**
 * The batches of one rank. Iterating goes on from position() (startBatch at first, or what
 * restore() set) and moves it as batches are yielded, so a loop can stop and another continue.
 */
export interface JsonlBatches extends Iterable<Batch> {
    readonly file: string;
    readonly format: JsonlFormat;
    /** Examples in the file (every rank holds all of them; each yields its own shard). */
    readonly examples: number;
    /** Rows per epoch: the examples, or with packing the packed rows (what is shuffled and sharded). */
    readonly rows: number;
    /** Batches per epoch (the same on every rank). */
    readonly batchesPerEpoch: number;
    /** Batches an iteration would yield from the current position (Infinity for endless epochs). */
    readonly length: number;
    /** Examples that truncation: true cut short. */
    readonly truncated: number;
    position(): JsonlDataPosition;
    /** Continues from a position() of a loader of the same file, format, seed, shuffle and global batch. */
    restore(position: unknown): void;
}

const kIgnore = -100;
const kFn = "data.jsonl";
const kMaxProblems = 20;

interface Example {
    readonly ids: Int32Array;
    /** The ids where the loss counts, −100 elsewhere. */
    readonly labels: Int32Array;
    /** Packed rows: each token's position in its own example (the engine's Batch.positionIds). */
    readonly positions?: Int32Array;
}

/**
 * packing: true. Examples in file order go into rows of seqLen, next-fit (an example that does not
 * fit the current row starts the next one); positions restart at 0 for each example and the
 * engine keeps attention inside each one; the first token of each example gets label −100 (the
 * loss at a position predicts the next token, which must not cross from one example into the
 * next); the rest of a row is padding, one more "example" of its own with labels −100. The rows
 * are then shuffled and sharded like examples. The same rows whatever the seed, rank or world.
 */
function packRows(examples: readonly Example[], seqLen: number, pad: number): Example[] {
    const rows: Example[] = [];
    let current: Example[] = [];
    let used = 0;
    const close = (): void => {
        const ids = new Int32Array(seqLen).fill(pad);
        const labels = new Int32Array(seqLen).fill(kIgnore);
        const positions = new Int32Array(seqLen);
        let at = 0;
        for (const example of current) {
            ids.set(example.ids, at);
            labels.set(example.labels, at);
            labels[at] = kIgnore;
            for (let t = 0; t < example.ids.length; t++) positions[at + t] = t;
            at += example.ids.length;
        }
        for (let t = at; t < seqLen; t++) positions[t] = t - at;
        rows.push({ids, labels, positions});
        current = [];
        used = 0;
    };
    for (const example of examples) {
        if (used + example.ids.length > seqLen) close();
        current.push(example);
        used += example.ids.length;
    }
    if (current.length > 0) close();
    return rows;
}

/**
 * data.jsonl(file, options): a JSON Lines file of examples as this rank's padded, masked batches
 * (see the module comment). Throws InputError MIXZ_ERR_DATA listing every bad line as
 * `file:line: …`, or for a bad option; MIXZ_ERR_FILE_READ.
 */
export async function jsonlData(file: string, options: JsonlDataOptions): Promise<JsonlBatches> {
    if (typeof file !== "string" || file === "") throw optionError(kFn, "file", `must be a non-empty path string, got ${JSON.stringify(file) ?? typeof file}`);
    if (typeof options !== "object" || options === null) throw optionError(kFn, "options", "must be an object {tokenizer, format, seqLen, microBatch, ...}");
    const format = options.format;
    if (format !== "text" && format !== "prompt_completion" && format !== "messages") {
        throw optionError(kFn, "format", `must be "text", "prompt_completion" or "messages", got ${JSON.stringify(format) ?? String(format)}`);
    }
    const {seqLen, micro, worldSize, rank, seed, startBatch, epochs, shuffle} = shardOptions(kFn, options);
    const truncation = optionBoolean(kFn, "truncation", options.truncation, false);
    const packing = optionBoolean(kFn, "packing", options.packing, false);
    const tokenizer = checkTokenizer(options.tokenizer, format);
    const pad = tokenizer.padTokenId ?? tokenizer.eosTokenIds[0] ?? 0;

    const path = resolve(file);
    let raw: Buffer;
    try {
        raw = readFileSync(path);
    } catch (error) {
        throw readError(path, error, "JSONL file");
    }
    const sha256 = createHash("sha256").update(raw).digest("hex").slice(0, 16);

    // Every line is checked before anything is yielded; all problems are reported together.
    const examples: Example[] = [];
    const problems: Problem[] = [];
    let bad = 0;
    let truncated = 0;
    // A UTF-8 byte-order mark (Windows editors write one) is not part of the first line; CRLF ends are JSON whitespace.
    const lines = raw.toString("utf8").replace(/^\uFEFF/, "").split("\n");
    for (const [index, text] of lines.entries()) {
        if (text.trim() === "") continue;
        const line = index + 1;
        try {
            const example = await tokenizeLine(tokenizer, format, text);
            if (example.ids.length > seqLen) {
                if (!truncation) throw new LineError(`example has ${example.ids.length} tokens, seqLen is ${seqLen}; shorten it or pass truncation: true`);
                truncated++;
                examples.push({ids: example.ids.subarray(0, seqLen), labels: example.labels.subarray(0, seqLen)});
            } else {
                examples.push(example);
            }
        } catch (error) {
            if (!(error instanceof LineError)) throw error;
            if (++bad <= kMaxProblems) problems.push({code: ErrorCodes.data, file: path, line, message: error.message});
        }
    }
    if (bad > kMaxProblems) problems.push({code: ErrorCodes.data, file: path, message: `${bad - kMaxProblems} more bad line(s) not listed (${bad} in all)`});
    if (problems.length > 0) throw new InputError(problems);
    if (examples.length === 0) {
        throw new InputError([{code: ErrorCodes.data, file: path, line: 1, message: "no examples: the file is empty (a JSONL file holds one JSON object per line)"}]);
    }

    // Packed, the rows are the units that are shuffled and sharded.
    const units = packing ? packRows(examples, seqLen, pad) : examples;
    const n = units.length;
    const perBatch = worldSize * micro;
    const batchesPerEpoch = Math.floor(n / perBatch);
    if (batchesPerEpoch === 0) {
        throw new InputError([{code: ErrorCodes.data, file: path, message: `too short: ${n} example(s), one batch of ${worldSize} rank(s) × microBatch ${micro} needs ${perBatch}`}]);
    }
    const total = epochs === Infinity ? Infinity : epochs * batchesPerEpoch;
    let next = startBatch;

    function* iterate(): Generator<Batch> {
        let order: Uint32Array | null = null;
        let orderEpoch = -1;
        while (next < total) {
            const global = next;
            const epoch = Math.floor(global / batchesPerEpoch);
            if (epoch !== orderEpoch) {
                order = shuffle ? permutation(n, seed, epoch) : null;
                orderEpoch = epoch;
            }
            const first = (global % batchesPerEpoch) * perBatch + rank * micro;
            const inputIds = new Int32Array(micro * seqLen).fill(pad);
            const labels = new Int32Array(micro * seqLen).fill(kIgnore);
            const positionIds = packing ? new Int32Array(micro * seqLen) : undefined;
            for (let b = 0; b < micro; b++) {
                const example = units[order === null ? first + b : order[first + b]!]!;
                inputIds.set(example.ids, b * seqLen);
                labels.set(example.labels, b * seqLen);
                if (positionIds !== undefined) positionIds.set(example.positions!, b * seqLen);
            }
            next = global + 1;
            yield positionIds === undefined ? {inputIds, labels, shape: [micro, seqLen]} : {inputIds, labels, shape: [micro, seqLen], positionIds};
        }
    }

    const position = (): JsonlDataPosition => ({
        kind: "mixz-data-jsonl",
        version: 1,
        batch: next,
        epoch: Math.floor(next / batchesPerEpoch),
        examples: n,
        globalBatch: perBatch,
        seed,
        shuffle,
        sha256
    });
    const restore = (value: unknown): void => {
        const p = value as Partial<JsonlDataPosition> | null;
        const bad = (message: string): InputError => optionError(kFn, "restore", message);
        if (typeof p !== "object" || p === null || p.kind !== "mixz-data-jsonl" || p.version !== 1 || !Number.isSafeInteger(p.batch) || (p.batch as number) < 0) {
            throw bad(`not a position of data.jsonl (version 1): ${JSON.stringify(value)?.slice(0, 200) ?? String(value)}`);
        }
        const saved = p as JsonlDataPosition;
        if (saved.sha256 !== sha256 || saved.examples !== n) {
            throw bad(`the position was saved for other data (${saved.examples} examples, sha256 ${saved.sha256}…); ${path} has ${n} examples, sha256 ${sha256}…`);
        }
        if (saved.seed !== seed || saved.shuffle !== shuffle) {
            throw bad(`the position was saved with seed ${saved.seed}, shuffle ${saved.shuffle}; this loader has seed ${seed}, shuffle ${shuffle}: pass the same ones to continue the same order`);
        }
        if (saved.globalBatch !== perBatch) {
            throw bad(`the position was saved with a global batch of ${saved.globalBatch} examples (worldSize × microBatch), this loader's is ${perBatch}; resume with the same product`);
        }
        if (saved.batch > total) throw bad(`the position is batch ${saved.batch}, past this loader's ${total} (epochs ${epochs})`);
        next = saved.batch;
    };

    return {
        file: path,
        format,
        examples: examples.length,
        rows: n,
        batchesPerEpoch,
        get length() {
            return Math.max(0, total - next);
        },
        truncated,
        position,
        restore,
        [Symbol.iterator]: iterate
    };
}

/** A problem with one line; jsonlData adds the file and line. */
class LineError extends Error {}

function checkTokenizer(tokenizer: unknown, format: JsonlFormat): TextTokenizer {
    const t = tokenizer as Partial<TextTokenizer> | null | undefined;
    const bad = (message: string): InputError => optionError(kFn, "tokenizer", message);
    if (typeof t !== "object" || t === null || typeof t.encode !== "function") throw bad("must be a tokenizer object with encode(text, {addSpecialTokens}) (e.g. @mixz/tokenizers')");
    const id = (v: unknown): boolean => typeof v === "number" && Number.isSafeInteger(v) && v >= 0 && v < 2 ** 31;
    if (!Array.isArray(t.eosTokenIds) || !t.eosTokenIds.every(id)) throw bad(`eosTokenIds must be an array of token ids, got ${JSON.stringify(t.eosTokenIds)}`);
    if (t.bosTokenId !== null && !id(t.bosTokenId)) throw bad(`bosTokenId must be a token id or null, got ${JSON.stringify(t.bosTokenId)}`);
    if (t.padTokenId !== null && !id(t.padTokenId)) throw bad(`padTokenId must be a token id or null, got ${JSON.stringify(t.padTokenId)}`);
    if (format !== "messages" && t.eosTokenIds.length === 0) throw bad(`has no EOS token (eosTokenIds is empty): format "${format}" appends one after each example`);
    if (format === "messages" && typeof t.applyChatTemplate !== "function") throw bad('format "messages" needs applyChatTemplate(messages, {addGenerationPrompt})');
    return t as TextTokenizer;
}

/** Parses, checks and tokenizes one non-blank line (throws LineError). */
async function tokenizeLine(tokenizer: TextTokenizer, format: JsonlFormat, text: string): Promise<Example> {
    let json: unknown;
    try {
        json = JSON.parse(text);
    } catch (error) {
        throw new LineError(`not JSON (${(error as Error).message})`);
    }
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
        throw new LineError(`not a JSON object (got ${json === null ? "null" : Array.isArray(json) ? "an array" : typeof json}); each line is one example object`);
    }
    const object = json as Record<string, unknown>;
    const string = (key: string): string => {
        const value = object[key];
        if (value === undefined) throw new LineError(`format "${format}" needs a "${key}" field (the line has ${describeKeys(object)})`);
        if (typeof value !== "string") throw new LineError(`"${key}" must be a string, got ${typeOf(value)}`);
        return value;
    };
    const encode = async (s: string): Promise<number[]> => checkIds(await tokenizer.encode(s, {addSpecialTokens: false}));
    const bos = tokenizer.bosTokenId === null ? [] : [tokenizer.bosTokenId];
    const eos = tokenizer.eosTokenIds[0]!;
    if (format === "text") {
        const ids = [...bos, ...(await encode(string("text"))), eos];
        return {ids: Int32Array.from(ids), labels: Int32Array.from(ids)};
    }
    if (format === "prompt_completion") {
        const prompt = [...bos, ...(await encode(string("prompt")))];
        const completion = [...(await encode(string("completion"))), eos];
        return {
            ids: Int32Array.from([...prompt, ...completion]),
            labels: Int32Array.from([...prompt.map(() => kIgnore), ...completion])
        };
    }
    const messages = object["messages"];
    if (messages === undefined) throw new LineError(`format "messages" needs a "messages" field (the line has ${describeKeys(object)})`);
    if (!Array.isArray(messages) || messages.length === 0) throw new LineError(`"messages" must be a non-empty array of {"role", "content"} objects, got ${typeOf(messages)}`);
    for (const [i, m] of messages.entries()) {
        if (typeof m !== "object" || m === null || Array.isArray(m)) throw new LineError(`messages[${i}] must be a {"role", "content"} object, got ${typeOf(m)}`);
        for (const key of ["role", "content"]) {
            const value = (m as Record<string, unknown>)[key];
            if (typeof value !== "string") throw new LineError(`messages[${i}].${key} must be a string, got ${typeOf(value)}`);
        }
    }
    const chat = (messages as Record<string, string>[]).map(({role, content}) => ({role: role!, content: content!}));
    if (!chat.some((m) => m.role === "assistant")) throw new LineError('no "assistant" message: nothing to train on');
    const render = async (upTo: number, addGenerationPrompt: boolean): Promise<number[]> => {
        const rendered = tokenizer.applyChatTemplate(chat.slice(0, upTo), {addGenerationPrompt, tokenize: false});
        if (typeof rendered !== "string") throw new MixzError(ErrorCodes.data, `${kFn}: tokenizer.applyChatTemplate returned ${typeOf(rendered)}, not a string`, {category: "user"});
        return encode(rendered);
    };
    const ids = await render(chat.length, false);
    const labels = ids.map(() => kIgnore);
    // Some templates append the generation prompt whatever addGenerationPrompt says (Meta's first
    // LLaMA-3 Instruct template does): rendering no message then gives exactly that prompt, and it
    // is not part of the assistant turn it follows.
    const trailer = await alwaysAppended(tokenizer, chat, render);
    for (const [i, m] of chat.entries()) {
        if (m.role !== "assistant") continue;
        const before = await render(i, true);
        let after = i + 1 === chat.length ? ids : await render(i + 1, false);
        if (trailer.length > 0 && after.length - trailer.length >= before.length && isSuffix(trailer, after)) after = after.slice(0, after.length - trailer.length);
        if (!isPrefix(before, after) || !isPrefix(after, ids)) {
            throw new LineError(
                `the chat template is not prefix-stable at messages[${i}] (rendering the first messages is not a prefix of rendering more of them), ` +
                    'so the assistant turn cannot be located; use format "prompt_completion" with the prompt rendered by the template'
            );
        }
        for (let k = before.length; k < after.length; k++) labels[k] = ids[k]!;
    }
    return {ids: Int32Array.from(ids), labels: Int32Array.from(labels)};
}

function checkIds(ids: ArrayLike<number>): number[] {
    const out = Array.from(ids);
    for (const [i, id] of out.entries()) {
        if (!Number.isSafeInteger(id) || id < 0 || id >= 2 ** 31) {
            throw new MixzError(ErrorCodes.data, `${kFn}: tokenizer.encode returned ${JSON.stringify(id)} at index ${i}, not a token id in [0, 2^31)`, {category: "user"});
        }
    }
    return out;
}

/**
 * The tokens a template appends after every rendering even without addGenerationPrompt (empty
 * when it honours the flag): rendering the first user turn with and without the flag gives the
 * same text exactly for such templates, and rendering no message at all gives the appended part.
 */
async function alwaysAppended(tokenizer: TextTokenizer, chat: readonly ChatMessage[], render: (upTo: number, addGenerationPrompt: boolean) => Promise<number[]>): Promise<number[]> {
    const firstAssistant = chat.findIndex((m) => m.role === "assistant");
    if (firstAssistant < 1) return [];
    const [plain, prompted] = await Promise.all([render(firstAssistant, false), render(firstAssistant, true)]);
    if (plain.length !== prompted.length || !isPrefix(plain, prompted)) return [];
    let empty: string;
    try {
        empty = tokenizer.applyChatTemplate([], {addGenerationPrompt: false, tokenize: false});
    } catch {
        return [];
    }
    if (typeof empty !== "string" || empty === "") return [];
    const tokens = checkIds(await tokenizer.encode(empty, {addSpecialTokens: false}));
    return isSuffix(tokens, plain) ? tokens : [];
}

function isSuffix(a: readonly number[], b: readonly number[]): boolean {
    if (a.length > b.length) return false;
    const offset = b.length - a.length;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[offset + i]) return false;
    return true;
}

function isPrefix(a: readonly number[], b: readonly number[]): boolean {
    return a.length <= b.length && a.every((x, i) => x === b[i]);
}

function typeOf(value: unknown): string {
    return value === null ? "null" : Array.isArray(value) ? "an array" : value === undefined ? "nothing" : typeof value;
}

function describeKeys(object: Record<string, unknown>): string {
    const keys = Object.keys(object);
    return keys.length === 0 ? "no fields" : `${keys.slice(0, 8).map((k) => JSON.stringify(k)).join(", ")}${keys.length > 8 ? ", …" : ""}`;
}

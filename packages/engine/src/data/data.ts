/**
 * Training data from binary token files, sharded by rank.
 *
 * A token file is a flat little-endian array of token ids, uint16 or uint32 (what nanoGPT-style
 * preprocessing writes with `np.array(ids, dtype=np.uint16).tofile(path)`); a text file read by
 * textData is the same with uint8 ids: its bytes.
 *
 * The scheme, deterministic for a seed and the same on every rank:
 *   - the file's N tokens are cut into S = floor(N / seqLen) sequences, sequence k being tokens
 *     [k·seqLen, (k+1)·seqLen); the last N mod seqLen tokens are not used. Labels are the inputs
 *     (the engine shifts them, as Hugging Face causal LMs do), so each sequence trains seqLen − 1
 *     predictions — Hugging Face's group_texts chunking;
 *   - epoch e visits the sequences in the order of a permutation drawn from (seed, e) (Fisher–Yates
 *     over a 32-bit counter-based generator), or in file order with shuffle: false;
 *   - global batch t of an epoch is positions [t·W·m, (t+1)·W·m) of that order, with W ranks and
 *     micro-batch m; rank r takes the m positions [t·W·m + r·m, t·W·m + (r+1)·m). Ranks' shares are
 *     disjoint and together form the global batch, which does not depend on how W·m is split;
 *   - an epoch has floor(S / (W·m)) batches on every rank (the remainder of the order is not used),
 *     so every rank makes the same number of engine calls.
 * Each rank reads only the sequences it yields (a positioned read per sequence), so the file is
 * never loaded whole; with vocabSize the whole file is checked once, up front, in chunks.
 */
import {closeSync, fstatSync, openSync, readSync} from "node:fs";
import {resolve} from "node:path";

import {ErrorCodes, InputError} from "@mixz/protocol";

import type {Batch} from "../train/ZeroEngine.js";

export type TokenDType = "uint16" | "uint32";

export interface TokenDataOptions {
    /** Tokens per sequence (the batch's shape[1]). */
    readonly seqLen: number;
    /** How ids are stored. */
    readonly dtype: TokenDType;
    /** Sequences per batch on this rank (the batch's shape[0]): train_micro_batch_size_per_gpu. */
    readonly microBatch: number;
    /** This rank and the world size (the mixz facade fills them in from runtime). */
    readonly rank: number;
    readonly worldSize: number;
    /** Seeds the order of each epoch; default 0. */
    readonly seed?: number;
    /** Default true; false visits the sequences in file order. */
    readonly shuffle?: boolean;
    /** Epochs to yield; default 1; Infinity for an endless stream. */
    readonly epochs?: number;
    /** Batches to skip (resuming a run); default 0. */
    readonly startBatch?: number;
    /** When given, every id must be below it (checked over the whole file before the first batch). */
    readonly vocabSize?: number;
}

export type TextDataOptions = Omit<TokenDataOptions, "dtype" | "vocabSize">;

/** The batches of one rank; iterate it (each iteration starts over from startBatch). */
export interface TokenBatches extends Iterable<Batch> {
    readonly file: string;
    /** Tokens in the file. */
    readonly tokens: number;
    /** Whole sequences in the file. */
    readonly sequences: number;
    /** Batches per epoch (the same on every rank). */
    readonly batchesPerEpoch: number;
    /** Batches one iteration yields (Infinity for endless epochs). */
    readonly length: number;
}

const itemSizeOf = {uint8: 1, uint16: 2, uint32: 4} as const;
type AnyTokenDType = keyof typeof itemSizeOf;

/**
 * data.tokens(file, options): a binary token file as this rank's batches (see the module comment).
 * Throws InputError MIXZ_ERR_DATA naming the file (too short for one global batch, a size that is
 * not a multiple of the dtype, an id out of range) or MIXZ_ERR_FILE_READ.
 */
export function tokenData(file: string, options: TokenDataOptions): TokenBatches {
    const dtype = options?.dtype;
    if (dtype !== "uint16" && dtype !== "uint32") {
        throw optionError("data.tokens", "dtype", `must be "uint16" or "uint32", got ${JSON.stringify(dtype)}`);
    }
    return batches("data.tokens", file, dtype, options);
}

/** data.text(file, options): a file's bytes as tokens 0–255, as this rank's batches. */
export function textData(file: string, options: TextDataOptions): TokenBatches {
    return batches("data.text", file, "uint8", {...options, vocabSize: 256});
}

function batches(fn: string, file: string, dtype: AnyTokenDType, options: Omit<TokenDataOptions, "dtype">): TokenBatches {
    if (typeof file !== "string" || file === "") throw optionError(fn, "file", `must be a non-empty path string, got ${JSON.stringify(file) ?? typeof file}`);
    if (typeof options !== "object" || options === null) throw optionError(fn, "options", "must be an object {seqLen, microBatch, ...}");
    const {seqLen, micro, worldSize, rank, seed, startBatch, epochs, shuffle} = shardOptions(fn, options);
    const vocabSize = options.vocabSize === undefined ? undefined : optionInteger(fn, "vocabSize", options.vocabSize, 1);

    const path = resolve(file);
    const itemSize = itemSizeOf[dtype];
    const bytes = withFile(path, (fd) => fstatSync(fd).size);
    if (bytes % itemSize !== 0) {
        throw dataError(path, `${bytes} bytes is not a multiple of ${itemSize} (${dtype} ids): not a ${dtype} token file, or truncated`);
    }
    const tokens = bytes / itemSize;
    const sequences = Math.floor(tokens / seqLen);
    const perBatch = worldSize * micro;
    const batchesPerEpoch = Math.floor(sequences / perBatch);
    if (batchesPerEpoch === 0) {
        throw dataError(path, `too short: ${tokens} tokens make ${sequences} sequences of ${seqLen}, one batch of ${worldSize} rank(s) × microBatch ${micro} needs ${perBatch} (${perBatch * seqLen} tokens)`);
    }
    if (vocabSize !== undefined || dtype === "uint32") checkIds(path, dtype, tokens, vocabSize ?? 2 ** 31);
    const total = epochs === Infinity ? Infinity : epochs * batchesPerEpoch;
    const length = Math.max(0, total - startBatch);

    function* iterate(): Generator<Batch> {
        const fd = openFile(path);
        const raw = Buffer.alloc(seqLen * itemSize);
        let order: Uint32Array | null = null;
        let orderEpoch = -1;
        try {
            for (let global = startBatch; global < total; global++) {
                const epoch = Math.floor(global / batchesPerEpoch);
                if (epoch !== orderEpoch) {
                    order = shuffle ? permutation(sequences, seed, epoch) : null;
                    orderEpoch = epoch;
                }
                const first = (global % batchesPerEpoch) * perBatch + rank * micro;
                const inputIds = new Int32Array(micro * seqLen);
                for (let b = 0; b < micro; b++) {
                    const sequence = order === null ? first + b : order[first + b]!;
                    readAt(fd, path, raw, sequence * seqLen * itemSize);
                    decode(raw, dtype, inputIds, b * seqLen);
                }
                yield {inputIds, labels: inputIds.slice(), shape: [micro, seqLen]};
            }
        } finally {
            closeSync(fd);
        }
    }
    return {file: path, tokens, sequences, batchesPerEpoch, length, [Symbol.iterator]: iterate};
}

/** A permutation of [0, n) for (seed, epoch): Fisher–Yates over a splitmix-style 32-bit generator. */
export function permutation(n: number, seed: number, epoch: number): Uint32Array {
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    let state = (Math.imul(seed % 0x1_0000_0000, 0x9e3779b9) ^ Math.imul(epoch + 1, 0x85ebca6b) ^ Math.floor(seed / 0x1_0000_0000)) >>> 0;
    const next = (): number => {
        state = (state + 0x9e3779b9) >>> 0;
        let z = state;
        z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
        z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
        return (z ^ (z >>> 16)) >>> 0;
    };
    for (let i = n - 1; i > 0; i--) {
        // Two draws make 53 random bits: no modulo bias worth the name for any n.
        const r = (next() * 2 ** 21 + (next() >>> 11)) % (i + 1);
        const t = order[i]!;
        order[i] = order[r]!;
        order[r] = t;
    }
    return order;
}

function decode(raw: Buffer, dtype: AnyTokenDType, out: Int32Array, at: number): void {
    const n = raw.length / itemSizeOf[dtype];
    for (let i = 0; i < n; i++) {
        out[at + i] = dtype === "uint8" ? raw[i]! : dtype === "uint16" ? raw.readUInt16LE(i * 2) : raw.readUInt32LE(i * 4);
    }
}

/** Every id below `limit`, else an error naming the file and the first bad id's position. */
function checkIds(path: string, dtype: AnyTokenDType, tokens: number, limit: number): void {
    if (dtype === "uint8" && limit >= 256) return;
    const itemSize = itemSizeOf[dtype];
    const chunkTokens = (4 << 20) / itemSize;
    const fd = openFile(path);
    try {
        const raw = Buffer.alloc(chunkTokens * itemSize);
        for (let start = 0; start < tokens; start += chunkTokens) {
            const count = Math.min(chunkTokens, tokens - start);
            const view = raw.subarray(0, count * itemSize);
            readAt(fd, path, view, start * itemSize);
            for (let i = 0; i < count; i++) {
                const id = dtype === "uint8" ? view[i]! : dtype === "uint16" ? view.readUInt16LE(i * 2) : view.readUInt32LE(i * 4);
                if (id >= limit) {
                    const why = limit === 2 ** 31 ? "above the largest id the engine takes (2^31 − 1)" : `outside the vocabulary [0, ${limit})`;
                    throw dataError(path, `token ${start + i} (byte offset ${(start + i) * itemSize}) is id ${id}, ${why}`);
                }
            }
        }
    } finally {
        closeSync(fd);
    }
}

function readAt(fd: number, path: string, out: Buffer, position: number): void {
    for (let done = 0; done < out.length; ) {
        let n: number;
        try {
            n = readSync(fd, out, done, out.length - done, position + done);
        } catch (error) {
            throw readError(path, error);
        }
        if (n === 0) throw dataError(path, `the file ended at byte ${position + done} while reading bytes up to ${position + out.length} (it shrank while in use?)`);
        done += n;
    }
}

function openFile(path: string): number {
    try {
        return openSync(path, "r");
    } catch (error) {
        throw readError(path, error);
    }
}

function withFile<T>(path: string, body: (fd: number) => T): T {
    const fd = openFile(path);
    try {
        return body(fd);
    } finally {
        closeSync(fd);
    }
}

/** @internal An option of a data loader is wrong (shared by jsonl.ts). */
export function optionError(fn: string, key: string, message: string): InputError {
    return new InputError([{code: ErrorCodes.data, path: `${fn}: ${key}`, message}]);
}

/** @internal An integer option in [min, max], else optionError naming it. */
export function optionInteger(fn: string, key: string, value: unknown, min: number, max = 2 ** 31 - 1): number {
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max) {
        throw optionError(fn, key, `must be an integer in [${min}, ${max}], got ${JSON.stringify(value) ?? String(value)}`);
    }
    return value;
}

/** @internal A boolean option (`fallback` when absent), else optionError naming it. */
export function optionBoolean(fn: string, key: string, value: unknown, fallback: boolean): boolean {
    if (value === undefined) return fallback;
    if (typeof value !== "boolean") throw optionError(fn, key, `must be true or false, got ${JSON.stringify(value)}`);
    return value;
}

/** @internal The batch, shard and order options every loader takes, checked in one order. */
export function shardOptions(fn: string, options: {
    readonly seqLen: number; readonly microBatch: number; readonly rank: number; readonly worldSize: number;
    readonly seed?: number; readonly startBatch?: number; readonly epochs?: number; readonly shuffle?: boolean;
}): {seqLen: number; micro: number; worldSize: number; rank: number; seed: number; startBatch: number; epochs: number; shuffle: boolean} {
    const seqLen = optionInteger(fn, "seqLen", options.seqLen, 2);
    const micro = optionInteger(fn, "microBatch", options.microBatch, 1);
    const worldSize = optionInteger(fn, "worldSize", options.worldSize, 1);
    const rank = optionInteger(fn, "rank", options.rank, 0, worldSize - 1);
    const seed = optionInteger(fn, "seed", options.seed ?? 0, 0, Number.MAX_SAFE_INTEGER);
    const startBatch = optionInteger(fn, "startBatch", options.startBatch ?? 0, 0, Number.MAX_SAFE_INTEGER);
    const epochs = options.epochs ?? 1;
    if (epochs !== Infinity) optionInteger(fn, "epochs", epochs, 1, Number.MAX_SAFE_INTEGER);
    const shuffle = optionBoolean(fn, "shuffle", options.shuffle, true);
    return {seqLen, micro, worldSize, rank, seed, startBatch, epochs, shuffle};
}

function dataError(path: string, message: string): InputError {
    return new InputError([{code: ErrorCodes.data, file: path, message}]);
}

/** @internal A data file cannot be read (shared by jsonl.ts). */
export function readError(path: string, error: unknown, what = "token file"): InputError {
    const reason = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    return new InputError([{code: ErrorCodes.fileRead, file: path, message: `cannot read the ${what} (${reason})`}]);
}

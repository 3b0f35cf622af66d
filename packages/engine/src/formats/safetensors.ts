/**
 * safetensors files: reading the header, reading one tensor or an element range of it, and writing
 * a file atomically.
 *
 * The format (huggingface/safetensors):
 *   - bytes [0, 8): N, a little-endian u64: the header's length in bytes;
 *   - bytes [8, 8 + N): the header, UTF-8 JSON: {name: {dtype, shape, data_offsets: [begin, end]}},
 *     plus an optional "__metadata__": {string: string};
 *   - bytes [8 + N, end of file): the data buffer. Offsets are relative to its start, every tensor
 *     is stored row-major and little-endian, and the tensors cover the buffer exactly: sorted by
 *     begin they are contiguous, with no gap, no overlap and nothing after the last one.
 *
 * Vocabulary: the *data offset* is 8 + N, where the buffer starts in the file; a tensor's *span*
 * is its [begin, end) in the buffer; a *range* is an element interval [from, to) of a tensor's
 * flattened data.
 *
 * Reading is strict, as the reference reader's validation is: a file that passes here passes
 * there. Ranks of a large job read only their own slices of big files, so readTensor reads exactly
 * the bytes asked for and never maps or loads the rest.
 *
 * Writing follows the reference writer: compact JSON with "__metadata__" first, the header padded
 * with spaces to a multiple of 8 bytes, tensors ordered by item size (largest first), then by name
 * (by UTF-8 bytes). That order is the reference's "dtype alignment, then name"; it keeps every
 * tensor naturally aligned in the file, so a reader that maps the file can view any tensor in place.
 *
 * Typed arrays are read and written in the host's byte order, so this module refuses to run on a
 * big-endian host rather than silently swapping nothing.
 */
import {randomBytes} from "node:crypto";
import {constants as fsConstants} from "node:fs";
import {open, rename, unlink} from "node:fs/promises";
import type {FileHandle} from "node:fs/promises";
import {endianness} from "node:os";
import {basename, dirname, join} from "node:path";

import {ErrorCodes, InputError, MixzError} from "@mixz/protocol";
import {syncDirectory} from "./durableFiles.js";

/** The dtypes mixz reads and writes. Sub-byte dtypes (F4, F6_*) and complex ones are refused. */
export type SafetensorsDType =
    | "BOOL"
    | "U8"
    | "I8"
    | "F8_E5M2"
    | "F8_E4M3"
    | "I16"
    | "U16"
    | "F16"
    | "BF16"
    | "I32"
    | "U32"
    | "F32"
    | "F64"
    | "I64"
    | "U64";

/** The typed array a dtype is read into: 16-bit floats (F16, BF16) as their bit patterns. */
export type SafetensorsArrayOf<D extends SafetensorsDType> = D extends "F64"
    ? Float64Array
    : D extends "F32"
      ? Float32Array
      : D extends "I64"
        ? BigInt64Array
        : D extends "U64"
          ? BigUint64Array
          : D extends "I32"
            ? Int32Array
            : D extends "U32"
              ? Uint32Array
              : D extends "I16"
                ? Int16Array
                : D extends "U16" | "F16" | "BF16"
                  ? Uint16Array
                  : D extends "I8"
                    ? Int8Array
                    : Uint8Array;

/** Any array readTensor can return. */
export type SafetensorsArray =
    | Float64Array
    | Float32Array
    | BigInt64Array
    | BigUint64Array
    | Int32Array
    | Uint32Array
    | Int16Array
    | Uint16Array
    | Int8Array
    | Uint8Array;

type ArrayConstructorOf = new (buffer: ArrayBuffer, byteOffset: number, length: number) => SafetensorsArray;

interface DTypeInfo {
    readonly itemSize: number;
    readonly array: ArrayConstructorOf;
}

const dtypeInfo: Readonly<Record<SafetensorsDType, DTypeInfo>> = {
    BOOL: {itemSize: 1, array: Uint8Array},
    U8: {itemSize: 1, array: Uint8Array},
    I8: {itemSize: 1, array: Int8Array},
    F8_E5M2: {itemSize: 1, array: Uint8Array},
    F8_E4M3: {itemSize: 1, array: Uint8Array},
    I16: {itemSize: 2, array: Int16Array},
    U16: {itemSize: 2, array: Uint16Array},
    F16: {itemSize: 2, array: Uint16Array},
    BF16: {itemSize: 2, array: Uint16Array},
    I32: {itemSize: 4, array: Int32Array},
    U32: {itemSize: 4, array: Uint32Array},
    F32: {itemSize: 4, array: Float32Array},
    F64: {itemSize: 8, array: Float64Array},
    I64: {itemSize: 8, array: BigInt64Array},
    U64: {itemSize: 8, array: BigUint64Array}
};

/** Every dtype this module knows, in the reference's order. */
export const safetensorsDTypes: readonly SafetensorsDType[] = Object.keys(dtypeInfo) as SafetensorsDType[];

/** Bytes per element of a dtype. */
export function safetensorsItemSize(dtype: SafetensorsDType): number {
    return dtypeInfo[dtype].itemSize;
}

/** The reference reader refuses headers larger than this (100 MB), so the writer does too. */
export const maxSafetensorsHeaderBytes = 100_000_000;

/** The header key that holds the string-to-string metadata. */
const metadataKey = "__metadata__";
/** Bytes read or written per system call: well under Linux's 2 GiB cap on one read. */
const ioChunkBytes = 64 * 1024 * 1024;

/** One tensor as the header describes it. */
export interface SafetensorsTensorInfo {
    readonly dtype: SafetensorsDType;
    readonly shape: readonly number[];
    /** Its span in the data buffer, in bytes: [begin, end). */
    readonly begin: number;
    readonly end: number;
    /** product(shape): 1 for a scalar (shape []), 0 when any dimension is 0. */
    readonly elements: number;
}

/** A validated header. */
export interface SafetensorsHeader {
    /** The file, as named to readSafetensorsHeader; errors about it name it so. */
    readonly path: string;
    /** The tensors in the header's order. */
    readonly tensors: ReadonlyMap<string, SafetensorsTensorInfo>;
    /** "__metadata__", or null when the file has none. */
    readonly metadata: Readonly<Record<string, string>> | null;
    /** Where the data buffer starts in the file: 8 + the header length. */
    readonly dataOffset: number;
    /** The file's size when the header was read. */
    readonly fileSize: number;
}

/** An element interval [from, to) of a tensor's flattened data. */
export interface TensorRange {
    readonly from: number;
    readonly to: number;
}

/** The bytes of one tensor to write, little-endian, row-major. */
export type SafetensorsData = ArrayBufferView | AsyncIterable<ArrayBufferView>;

/** One tensor to write. */
export interface SafetensorsTensor {
    readonly name: string;
    readonly dtype: SafetensorsDType;
    readonly shape: readonly number[];
    /**
     * Its data: one typed array (of the dtype's own kind, or raw bytes in a Uint8Array, Buffer or
     * DataView), or chunks produced as the file is written, so a tensor assembled from pieces
     * never needs to exist whole in memory. The byte count must be product(shape) · item size.
     */
    readonly data: SafetensorsData;
}

export interface SafetensorsReadOptions {
    /** The name used in errors when a FileHandle is passed (default "fd <n>"). */
    readonly path?: string;
}

// ---------------------------------------------------------------------------------------------
// Reading

/**
 * Reads and validates the header of a safetensors file (only the header: 8 + N bytes). Throws an
 * InputError with code MIXZ_ERR_SAFETENSORS naming the file and the first problem found, or
 * MIXZ_ERR_FILE_READ when the file cannot be opened or read.
 */
export async function readSafetensorsHeader(
    file: string | FileHandle,
    options: SafetensorsReadOptions = {}
): Promise<SafetensorsHeader> {
    checkHostEndianness();
    const path = typeof file === "string" ? file : (options.path ?? `fd ${file.fd}`);
    return withHandle(file, path, async (handle) => {
        const fileSize = await sizeOf(handle, path);
        if (fileSize < 8) {
            throw formatError(path, `truncated file: ${fileSize} bytes, shorter than the 8-byte header length`);
        }
        const lengthBytes = await readExactly(handle, path, 0, 8, "the header length");
        const declared = Buffer.from(lengthBytes.buffer, lengthBytes.byteOffset, 8).readBigUInt64LE(0);
        if (declared > BigInt(maxSafetensorsHeaderBytes)) {
            throw formatError(path, `bad header length ${declared}: larger than the ${maxSafetensorsHeaderBytes}-byte limit`);
        }
        const headerLength = Number(declared);
        if (8 + headerLength > fileSize) {
            throw formatError(
                path,
                `bad header length ${headerLength}: the file has only ${fileSize - 8} bytes after the length (truncated header?)`
            );
        }
        if (headerLength < 2) throw formatError(path, `bad header length ${headerLength}: too short for a JSON object`);
        const headerBytes = await readExactly(handle, path, 8, headerLength, "the header");
        const dataOffset = 8 + headerLength;
        return parseHeader(path, headerBytes, dataOffset, fileSize);
    });
}

/**
 * Reads one tensor, or the element range [from, to) of its flattened data, reading only those
 * bytes. F16 and BF16 come back as bit patterns in a Uint16Array, 64-bit integers as BigInt arrays.
 * A file shorter than its header promised (changed since the header was read) is reported as
 * truncated.
 */
export async function readTensor(
    file: string | FileHandle,
    header: SafetensorsHeader,
    name: string,
    range?: TensorRange
): Promise<SafetensorsArray> {
    checkHostEndianness();
    const path = header.path;
    const info = header.tensors.get(name);
    if (info === undefined) {
        const known = [...header.tensors.keys()];
        const list = known.length <= 8 ? known.map((k) => JSON.stringify(k)).join(", ") : `${known.length} tensors`;
        throw formatError(path, `no tensor ${JSON.stringify(name)} (the file has ${list || "no tensors"})`);
    }
    const {from, to} = range === undefined ? {from: 0, to: info.elements} : checkRange(path, name, info, range);
    const {itemSize, array} = dtypeInfo[info.dtype];
    const count = to - from;
    const buffer = new ArrayBuffer(count * itemSize);
    if (count > 0) {
        const position = header.dataOffset + info.begin + from * itemSize;
        await withHandle(file, path, (handle) =>
            readInto(handle, path, new Uint8Array(buffer), position, `tensor ${JSON.stringify(name)}`)
        );
    }
    return new array(buffer, 0, count);
}

function checkRange(path: string, name: string, info: SafetensorsTensorInfo, range: TensorRange): TensorRange {
    const {from, to} = range;
    if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 0 || to < from || to > info.elements) {
        throw new MixzError(
            ErrorCodes.safetensors,
            `${path}: tensor ${JSON.stringify(name)}: element range [${String(from)}, ${String(to)}) is not within [0, ${info.elements}]`,
            {category: "platform", context: {path, tensor: name, from, to, elements: info.elements}}
        );
    }
    return {from, to};
}

function parseHeader(path: string, bytes: Uint8Array, dataOffset: number, fileSize: number): SafetensorsHeader {
    let text: string;
    try {
        text = new TextDecoder("utf-8", {fatal: true}).decode(bytes);
    } catch {
        throw formatError(path, "the header is not valid UTF-8");
    }
    // The reference reader insists on an object that starts at the first byte; only the padding
    // after it may be whitespace.
    if (!text.startsWith("{")) throw formatError(path, "the header does not start with '{'");
    let json: unknown;
    try {
        json = JSON.parse(text);
    } catch (error) {
        throw formatError(path, `the header is not valid JSON (${(error as Error).message})`);
    }
    if (!isPlainObject(json)) throw formatError(path, "the header is not a JSON object");

    const bufferLength = fileSize - dataOffset;
    let metadata: Record<string, string> | null = null;
    const tensors = new Map<string, SafetensorsTensorInfo>();
    for (const [name, entry] of Object.entries(json)) {
        if (name === metadataKey) {
            metadata = parseMetadata(path, entry);
            continue;
        }
        tensors.set(name, parseEntry(path, name, entry, bufferLength));
    }
    checkCoverage(path, tensors, bufferLength);
    return {path, tensors, metadata, dataOffset, fileSize};
}

function parseMetadata(path: string, value: unknown): Record<string, string> {
    if (!isPlainObject(value)) throw formatError(path, `"${metadataKey}" is not an object of strings`);
    const out: Record<string, string> = {};
    for (const [key, item] of Object.entries(value)) {
        if (typeof item !== "string") {
            throw formatError(path, `"${metadataKey}" value of ${JSON.stringify(key)} is not a string`);
        }
        out[key] = item;
    }
    return out;
}

function parseEntry(path: string, name: string, entry: unknown, bufferLength: number): SafetensorsTensorInfo {
    const what = `tensor ${JSON.stringify(name)}`;
    if (!isPlainObject(entry)) throw formatError(path, `${what} is not an object`);
    const dtype = entry["dtype"];
    if (typeof dtype !== "string") throw formatError(path, `${what} has no dtype string`);
    if (!isDType(dtype)) {
        throw formatError(path, `${what} has unknown dtype ${JSON.stringify(dtype)} (known: ${safetensorsDTypes.join(", ")})`);
    }
    const shape = entry["shape"];
    if (!isShape(shape)) {
        throw formatError(path, `${what} shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    const offsets = entry["data_offsets"];
    if (
        !Array.isArray(offsets) ||
        offsets.length !== 2 ||
        !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)
    ) {
        throw formatError(path, `${what} data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) throw formatError(path, `${what} data_offsets [${begin},${end}] end before they begin`);
    if (end > bufferLength) {
        throw formatError(
            path,
            `${what} data_offsets [${begin},${end}] run past the end of the ${bufferLength}-byte data buffer (truncated data?)`
        );
    }
    const info = dtypeInfo[dtype];
    const elements = shape.reduce((product, d) => product * d, 1);
    const bytes = elements * info.itemSize;
    if (!Number.isSafeInteger(bytes)) throw formatError(path, `${what} shape [${shape.join(",")}] is too large`);
    if (end - begin !== bytes) {
        throw formatError(
            path,
            `${what} shape [${shape.join(",")}] ${dtype} needs ${bytes} bytes but data_offsets [${begin},${end}] give ${end - begin}`
        );
    }
    return {dtype, shape, begin, end, elements};
}

/** Sorted by begin, the spans must tile [0, bufferLength) exactly. */
function checkCoverage(path: string, tensors: ReadonlyMap<string, SafetensorsTensorInfo>, bufferLength: number): void {
    // Empty tensors (begin = end) sort before a non-empty one at the same offset, so a run of them
    // at one offset is fine; the reference reader accepts the same files.
    const spans = [...tensors].sort(([, a], [, b]) => a.begin - b.begin || a.end - b.end);
    let expected = 0;
    let previous: string | undefined;
    for (const [name, info] of spans) {
        if (info.begin < expected) {
            throw formatError(
                path,
                `tensor ${JSON.stringify(name)} data_offsets [${info.begin},${info.end}] overlap tensor ${JSON.stringify(previous)} (which ends at ${expected})`
            );
        }
        if (info.begin > expected) {
            throw formatError(path, `gap in the data buffer: bytes [${expected},${info.begin}) belong to no tensor`);
        }
        expected = info.end;
        previous = name;
    }
    if (expected !== bufferLength) {
        throw formatError(
            path,
            `the tensors cover ${expected} bytes but the data buffer has ${bufferLength} (trailing bytes after the last tensor)`
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

/**
 * Writes a safetensors file atomically: into a temporary file in the same directory, fsynced,
 * renamed over `path`, then the directory fsynced so the rename itself survives a crash. Readers
 * see the old file or the new one, never a mix; on any failure the temporary file is removed and
 * the old file is untouched. Tensor data is written tensor by tensor (chunk by chunk for iterable
 * data), never concatenated.
 *
 * Bad tensors (unknown dtype, duplicate or reserved names, byte counts that do not match the
 * shape) throw MIXZ_ERR_SAFETENSORS; I/O failures throw MIXZ_ERR_FILE_WRITE.
 */
export async function writeSafetensors(
    path: string,
    tensors: readonly SafetensorsTensor[],
    metadata?: Readonly<Record<string, string>>
): Promise<void> {
    checkHostEndianness();
    const planned = planTensors(path, tensors);
    const header = encodeHeader(path, planned, metadata);

    const directory = dirname(path);
    const temporary = join(directory, `.${basename(path)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
    let handle: FileHandle | undefined;
    let renamed = false;
    try {
        handle = await open(temporary, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o644);
        await writeAll(handle, header, path);
        for (const tensor of planned) await writeTensorData(handle, tensor, path);
        await handle.sync();
        await handle.close();
        handle = undefined;
        await rename(temporary, path);
        renamed = true;
        await syncDirectory(directory);
    } catch (error) {
        if (handle !== undefined) await handle.close().catch(() => undefined);
        if (!renamed) await unlink(temporary).catch(() => undefined);
        if (error instanceof MixzError) throw error;
        throw writeError(path, error);
    }
}

interface PlannedTensor {
    readonly name: string;
    readonly dtype: SafetensorsDType;
    readonly shape: readonly number[];
    readonly bytes: number;
    readonly data: SafetensorsData;
}

function planTensors(path: string, tensors: readonly SafetensorsTensor[]): PlannedTensor[] {
    if (!Array.isArray(tensors)) throw inputError(path, "tensors must be an array");
    const seen = new Set<string>();
    const planned = tensors.map((tensor, index): PlannedTensor => {
        // Callers from plain JavaScript can hand anything: read every field as unknown.
        const entry: unknown = tensor;
        if (!isPlainObject(entry)) throw inputError(path, `tensors[${index}] is not an object`);
        const {name, dtype, shape, data} = entry;
        if (typeof name !== "string") throw inputError(path, `tensors[${index}].name is not a string`);
        const what = `tensor ${JSON.stringify(name)}`;
        if (name === metadataKey) throw inputError(path, `${what}: the name is reserved for metadata`);
        if (seen.has(name)) throw inputError(path, `${what} appears twice`);
        seen.add(name);
        if (!isDType(dtype)) {
            throw inputError(path, `${what} has unknown dtype ${JSON.stringify(dtype)} (known: ${safetensorsDTypes.join(", ")})`);
        }
        if (!isShape(shape)) {
            throw inputError(path, `${what} shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
        }
        const elements = shape.reduce((product, d) => product * d, 1);
        const bytes = elements * dtypeInfo[dtype].itemSize;
        if (!Number.isSafeInteger(bytes)) throw inputError(path, `${what} shape [${shape.join(",")}] is too large`);
        if (ArrayBuffer.isView(data)) {
            checkArrayKind(path, what, dtype, data);
            if (data.byteLength !== bytes) {
                throw inputError(
                    path,
                    `${what} shape [${shape.join(",")}] ${dtype} needs ${bytes} bytes but its data has ${data.byteLength}`
                );
            }
        } else if (!isAsyncIterable(data)) {
            throw inputError(path, `${what} data is neither a typed array nor an async iterable of byte chunks`);
        }
        return {name, dtype, shape: [...shape], bytes, data};
    });
    // Largest items first, then by name in UTF-8 byte order (see the module comment).
    return planned.sort(
        (a, b) =>
            dtypeInfo[b.dtype].itemSize - dtypeInfo[a.dtype].itemSize ||
            Buffer.compare(Buffer.from(a.name, "utf8"), Buffer.from(b.name, "utf8"))
    );
}

/** A typed array of another element kind is almost always a mistake (Float64Array for F32), so refuse it. */
function checkArrayKind(path: string, what: string, dtype: SafetensorsDType, data: ArrayBufferView): void {
    if (data instanceof Uint8Array || data instanceof DataView) return; // raw bytes (Buffer included)
    const expected = dtypeInfo[dtype].array;
    if (!(data instanceof expected)) {
        throw inputError(
            path,
            `${what} is ${dtype} but its data is a ${data.constructor.name} (expected ${expected.name} or raw bytes in a Uint8Array)`
        );
    }
}

function encodeHeader(path: string, planned: readonly PlannedTensor[], metadata: Readonly<Record<string, string>> | undefined): Uint8Array {
    // Insertion order is serialization order: metadata first, then tensors in file order.
    const header: Record<string, unknown> = {};
    if (metadata !== undefined) {
        if (!isPlainObject(metadata)) throw inputError(path, "metadata must be an object of strings");
        for (const [key, value] of Object.entries(metadata)) {
            if (typeof value !== "string") throw inputError(path, `metadata value of ${JSON.stringify(key)} is not a string`);
        }
        header[metadataKey] = {...metadata};
    }
    let offset = 0;
    for (const tensor of planned) {
        header[tensor.name] = {dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, offset + tensor.bytes]};
        offset += tensor.bytes;
    }
    const json = Buffer.from(JSON.stringify(header), "utf8");
    const padded = Math.ceil(json.length / 8) * 8;
    if (padded > maxSafetensorsHeaderBytes) {
        throw inputError(path, `the header would be ${padded} bytes, over the ${maxSafetensorsHeaderBytes}-byte limit readers enforce`);
    }
    const out = Buffer.alloc(8 + padded, 0x20);
    out.writeBigUInt64LE(BigInt(padded), 0);
    json.copy(out, 8);
    return out;
}

async function writeTensorData(handle: FileHandle, tensor: PlannedTensor, path: string): Promise<void> {
    const what = `tensor ${JSON.stringify(tensor.name)}`;
    if (ArrayBuffer.isView(tensor.data)) {
        await writeAll(handle, bytesOf(tensor.data), path);
        return;
    }
    let written = 0;
    for await (const chunk of tensor.data) {
        if (!ArrayBuffer.isView(chunk)) throw inputError(path, `${what}: a data chunk is not a typed array`);
        written += chunk.byteLength;
        if (written > tensor.bytes) {
            throw inputError(path, `${what} shape [${tensor.shape.join(",")}] ${tensor.dtype} needs ${tensor.bytes} bytes but its chunks give more`);
        }
        await writeAll(handle, bytesOf(chunk), path);
    }
    if (written !== tensor.bytes) {
        throw inputError(
            path,
            `${what} shape [${tensor.shape.join(",")}] ${tensor.dtype} needs ${tensor.bytes} bytes but its chunks give ${written}`
        );
    }
}

async function writeAll(handle: FileHandle, bytes: Uint8Array, path: string): Promise<void> {
    for (let done = 0; done < bytes.length; ) {
        const length = Math.min(ioChunkBytes, bytes.length - done);
        try {
            const {bytesWritten} = await handle.write(bytes, done, length);
            done += bytesWritten;
        } catch (error) {
            throw writeError(path, error);
        }
    }
}


function bytesOf(view: ArrayBufferView): Uint8Array {
    return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

// ---------------------------------------------------------------------------------------------
// Helpers

async function withHandle<T>(file: string | FileHandle, path: string, body: (handle: FileHandle) => Promise<T>): Promise<T> {
    if (typeof file !== "string") return body(file);
    let handle: FileHandle;
    try {
        handle = await open(file, "r");
    } catch (error) {
        throw readError(path, error);
    }
    try {
        return await body(handle);
    } finally {
        await handle.close().catch(() => undefined);
    }
}

async function sizeOf(handle: FileHandle, path: string): Promise<number> {
    try {
        return (await handle.stat()).size;
    } catch (error) {
        throw readError(path, error);
    }
}

async function readExactly(handle: FileHandle, path: string, position: number, length: number, what: string): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    await readInto(handle, path, out, position, what);
    return out;
}

async function readInto(handle: FileHandle, path: string, out: Uint8Array, position: number, what: string): Promise<void> {
    for (let done = 0; done < out.length; ) {
        const length = Math.min(ioChunkBytes, out.length - done);
        let bytesRead: number;
        try {
            ({bytesRead} = await handle.read(out, done, length, position + done));
        } catch (error) {
            throw readError(path, error);
        }
        if (bytesRead === 0) {
            throw formatError(path, `truncated file: ${what} needs bytes up to ${position + out.length} but the file ends at ${position + done}`);
        }
        done += bytesRead;
    }
}

function checkHostEndianness(): void {
    if (endianness() !== "LE") {
        throw new MixzError(ErrorCodes.notYetAvailable, "safetensors: big-endian hosts are not supported (the format is little-endian)");
    }
}

function isDType(value: unknown): value is SafetensorsDType {
    return typeof value === "string" && Object.hasOwn(dtypeInfo, value);
}

function isShape(value: unknown): value is number[] {
    return Array.isArray(value) && value.every((d) => Number.isSafeInteger(d) && (d as number) >= 0);
}

function isAsyncIterable(value: unknown): value is AsyncIterable<ArrayBufferView> {
    return typeof value === "object" && value !== null && typeof (value as Partial<AsyncIterable<unknown>>)[Symbol.asyncIterator] === "function";
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
    return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The file is not valid safetensors: the user's input. */
function formatError(path: string, message: string): InputError {
    return new InputError([{code: ErrorCodes.safetensors, file: path, message}]);
}

/** The tensors handed to the writer are wrong: the caller's mistake. */
function inputError(path: string, message: string): MixzError {
    return new MixzError(ErrorCodes.safetensors, `${path}: ${message}`, {category: "platform", context: {path}});
}

function readError(path: string, error: unknown): InputError {
    const reason = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    return new InputError([{code: ErrorCodes.fileRead, file: path, message: `cannot read the file (${reason})`}]);
}

function writeError(path: string, error: unknown): MixzError {
    const reason = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    return new MixzError(ErrorCodes.fileWrite, `${path}: cannot write the file (${reason})`, {
        category: "infra",
        context: {path},
        cause: error
    });
}

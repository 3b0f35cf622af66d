/**
 * Block quantization (qwZ / MixZ++), the TypeScript face of native/include/mixz/quant.
 *
 * Numerics (reference/zeropp.md §1.3-1.4, bit-compatible with DeepSpeed): per block of
 * `blockSize` elements, absmax in float32, scale = Q / absmax with Q = 128 (int8) or 8 (int4)
 * (1 when absmax is 0), q = clamp(round_half_even(x · scale), −Q, Q − 1), and the stored scale is
 * s = 1 / scale (float32, the dequantization multiplier); y = float(q) · s, rounded to the output
 * dtype to nearest even. int4 packs two values per byte, element 2i in the high nibble.
 *
 * fp16 and bf16 data travel as their bit patterns in a Uint16Array; fp32 as a Float32Array.
 *
 * Every function validates its arguments here (MixzError MIXZ_ERR_INVALID_ARGUMENT) and hands the
 * addon a complete descriptor. The work always runs off the JS thread (libuv's pool, split across
 * the native quantization threads for large buffers), so every function but the size helpers and
 * quantInfo returns a promise; errors from native code (e.g. NaN or infinity in the input) reject
 * with a MixzError carrying the native code. Arrays handed in must not be detached or resized
 * while a call is in flight.
 */
import {schemaDefault} from "@mixz/config";
import {MixzError} from "@mixz/protocol";

import {NativeErrorCodes} from "../binding/AddonTypes.js";
import type {NativeFloatDType, NativeQuantBenchmarkResult, NativeQuantInfo, NativeSimd} from "../binding/AddonTypes.js";
import {loadBinding} from "../binding/loadBinding.js";
import {callNative, callSite} from "../binding/callNative.js";

/** Element type of unquantized data. */
export type FloatDType = NativeFloatDType;
/** 8: int8 codes (Int8Array). 4: int4 codes, two per byte (Uint8Array). */
export type QuantBits = 8 | 4;
/** Which kernels run; see quantSimdEnvVar. */
export type SimdMode = NativeSimd;
/** Unquantized data: Float32Array for fp32, Uint16Array of bit patterns for fp16 and bf16. */
export type FloatArray = Float32Array | Uint16Array;
/** The array kind of a float dtype. */
export type FloatArrayOf<D extends FloatDType> = D extends "fp32" ? Float32Array : Uint16Array;
/** The array kind of quantized codes. */
export type CodeArrayOf<B extends QuantBits> = B extends 8 ? Int8Array : Uint8Array;

/** The smallest block size accepted (the config key `mixz.quant_block_size` starts at 64; smaller is for tests). */
export const minQuantBlockSize = 8;
/** The largest block size accepted. */
export const maxQuantBlockSize = 65536;
/** The default block size: the schema's default of the config key `mixz.quant_block_size`. */
export const defaultQuantBlockSize = schemaDefault(["mixz", "quant_block_size"]) as number;
/** Read at each call that does not pass `simd`: "scalar" forces the portable kernels, "avx2" requires AVX2. */
export const quantSimdEnvVar = "MIXZ_SIMD";

/** Options every kernel call takes. */
export interface KernelOptions {
    /** Kernels to run (default: $MIXZ_SIMD, else "auto"). Results are bit-identical either way. */
    readonly simd?: SimdMode;
    /** Threads for large buffers (default 0: min(hardware threads, $MIXZ_QUANT_THREADS)). */
    readonly threads?: number;
}

export interface QuantizeOptions<B extends QuantBits = QuantBits> extends KernelOptions {
    /** The input's dtype; must match its array kind. */
    readonly dtype: FloatDType;
    readonly bits: B;
    /** Elements per block: a power of two in [8, 65536]. */
    readonly blockSize: number;
    /** How many input elements to quantize, from the start of `input` (default: all). */
    readonly elements?: number;
    /**
     * Elements the output covers (≥ elements): the rest is zero padding, quantized to 0 and never
     * part of a block's absmax. Default paddedSize(elements, blockSize): whole blocks.
     */
    readonly paddedElements?: number;
    /**
     * Write into these; exact sizes: quantizedBytes(padded, bits) codes and
     * quantBlockCount(padded, blockSize) scales.
     */
    readonly out?: {readonly q: CodeArrayOf<B>; readonly scales: Float32Array};
}

/** The result of quantize. */
export interface QuantizedTensor<B extends QuantBits = QuantBits> {
    /** paddedElements codes: one byte each for int8, two per byte for int4. */
    readonly q: CodeArrayOf<B>;
    /** One float32 dequantization multiplier (1 / scale) per block. */
    readonly scales: Float32Array;
    readonly bits: B;
    readonly blockSize: number;
    /** The input elements quantized. */
    readonly elements: number;
    /** Elements the codes cover, padding included. */
    readonly paddedElements: number;
}

export interface DequantizeOptions<D extends FloatDType = FloatDType> extends KernelOptions {
    readonly bits: QuantBits;
    readonly blockSize: number;
    /** Values to produce, from the start of `q` (a padded `q` and `scales` may be longer). */
    readonly elements: number;
    readonly outDtype: D;
    /** Write into this array of exactly `elements`. */
    readonly out?: FloatArrayOf<D>;
}

/** One parameter's slice of a coalesced quantized buffer. */
export interface QuantSegment {
    readonly elements: number;
    /** This parameter's own block size. */
    readonly blockSize: number;
    /** Index of its first scale (default: right after the previous segment's scales). */
    readonly scaleOffset?: number;
    /** Its first code, in elements (default: right after the previous segment's codes); even for int4. */
    readonly inputOffset?: number;
    /** Where its values go in the output (default: right after the previous segment's values). */
    readonly outputOffset?: number;
}

export interface DequantizeSegmentsOptions<D extends FloatDType = FloatDType> extends KernelOptions {
    readonly bits: QuantBits;
    readonly outDtype: D;
    readonly segments: readonly QuantSegment[];
    /** Output length (default: the end of the last segment's output range). */
    readonly outElements?: number;
    /** Write into this array of exactly outElements; elements no segment covers are left as they are. */
    readonly out?: FloatArrayOf<D>;
}

export interface ConvertFloatsOptions<D extends FloatDType = FloatDType> extends KernelOptions {
    readonly from: FloatDType;
    readonly to: D;
}

export interface QuantBenchmarkOptions {
    /** Tensor elements, in [1, 2^32] (random Gaussian data, σ = 0.02). */
    readonly elements: number;
    readonly dtype: FloatDType;
    readonly bits: QuantBits;
    readonly blockSize: number;
    /** Timed repetitions per operation, in [1, 10000]. */
    readonly iterations: number;
    /** Threads for quantize and dequantize (0: default); memcpy always uses one. */
    readonly threads: number;
    readonly simd?: SimdMode;
}

export type QuantBenchmarkResult = NativeQuantBenchmarkResult;
export type QuantInfo = NativeQuantInfo;

// ---------------------------------------------------------------------------------------------
// Sizes

/** `elements` rounded up to whole blocks (0 stays 0). Arguments are not validated. */
export function paddedSize(elements: number, blockSize: number): number {
    return quantBlockCount(elements, blockSize) * blockSize;
}

/** Blocks (and scales) covering `elements`: ceil(elements / blockSize). */
export function quantBlockCount(elements: number, blockSize: number): number {
    return Math.ceil(elements / blockSize);
}

/** Bytes of codes for `elements` values: elements (int8) or ceil(elements / 2) (int4). */
export function quantizedBytes(elements: number, bits: QuantBits): number {
    return bits === 8 ? elements : Math.ceil(elements / 2);
}

// ---------------------------------------------------------------------------------------------
// Calls

let cachedInfo: NativeQuantInfo | undefined;

/** The kernels and threads this process can use (AVX2 support, default and maximum threads). */
export function quantInfo(): QuantInfo {
    cachedInfo ??= loadBinding().quantInfo();
    return cachedInfo;
}

/** Block-quantizes `input` (see the module comment for the arithmetic). */
export async function quantize<B extends QuantBits>(
    input: FloatArray,
    options: QuantizeOptions<B>
): Promise<QuantizedTensor<B>> {
    const site = callSite();
    const fn = "quantize";
    checkOptionsObject(fn, options);
    const dtype = checkDType(fn, "dtype", options.dtype);
    const bits = checkBits(fn, options.bits);
    const blockSize = checkBlockSize(fn, "blockSize", options.blockSize);
    checkFloatArray(fn, "input", input, dtype);
    const elements =
        options.elements === undefined ? input.length : checkCount(fn, "elements", options.elements, input.length);
    const paddedElements =
        options.paddedElements === undefined
            ? paddedSize(elements, blockSize)
            : checkCount(fn, "paddedElements", options.paddedElements, Number.MAX_SAFE_INTEGER, elements);
    const simd = checkSimd(fn, options.simd);
    const threads = checkThreads(fn, options.threads);
    const codeBytes = quantizedBytes(paddedElements, bits);
    const blocks = quantBlockCount(paddedElements, blockSize);
    let q: CodeArrayOf<B>;
    let scales: Float32Array;
    if (options.out !== undefined) {
        checkObject(fn, "out", options.out);
        q = checkCodeArray(fn, "out.q", options.out.q, bits) as CodeArrayOf<B>;
        scales = checkScales(fn, "out.scales", options.out.scales);
        checkExactLength(fn, "out.q", q, codeBytes, `${paddedElements} int${bits} codes`);
        checkExactLength(fn, "out.scales", scales, blocks, `${paddedElements} elements in blocks of ${blockSize}`);
    } else {
        q = (bits === 8 ? new Int8Array(codeBytes) : new Uint8Array(codeBytes)) as CodeArrayOf<B>;
        scales = new Float32Array(blocks);
    }
    const source = elements === input.length ? input : input.subarray(0, elements);
    await callNative(site, () =>
        loadBinding().quantize(source, q, scales, {dtype, bits, blockSize, elements, paddedElements, simd, threads})
    );
    return {q, scales, bits: bits as B, blockSize, elements, paddedElements};
}

/** Dequantizes the first `elements` codes of `q` with one block size into `outDtype`. */
export async function dequantize<D extends FloatDType>(
    q: Int8Array | Uint8Array,
    scales: Float32Array,
    options: DequantizeOptions<D>
): Promise<FloatArrayOf<D>> {
    const site = callSite();
    const fn = "dequantize";
    checkOptionsObject(fn, options);
    const bits = checkBits(fn, options.bits);
    const blockSize = checkBlockSize(fn, "blockSize", options.blockSize);
    const outDtype = checkDType(fn, "outDtype", options.outDtype);
    const elements = checkCount(fn, "elements", options.elements, Number.MAX_SAFE_INTEGER);
    checkCodeArray(fn, "q", q, bits);
    checkScales(fn, "scales", scales);
    const simd = checkSimd(fn, options.simd);
    const threads = checkThreads(fn, options.threads);
    const codeBytes = quantizedBytes(elements, bits);
    const blocks = quantBlockCount(elements, blockSize);
    if (q.length < codeBytes) {
        throw invalid(fn, `q has ${q.length} bytes, ${elements} int${bits} codes need ${codeBytes}`, {
            option: "q",
            length: q.length
        });
    }
    if (scales.length < blocks) {
        const message = `scales has ${scales.length} values, ${elements} elements in blocks of ${blockSize} need ${blocks}`;
        throw invalid(fn, message, {option: "scales", length: scales.length});
    }
    const out = outputArray(fn, options.out, outDtype, elements);
    await callNative(site, () =>
        loadBinding().dequantize(
            q.length === codeBytes ? q : q.subarray(0, codeBytes),
            scales.length === blocks ? scales : scales.subarray(0, blocks),
            out,
            {bits, blockSize, elements, outDtype, simd, threads}
        )
    );
    return out as FloatArrayOf<D>;
}

/**
 * Dequantizes a coalesced buffer of several parameters, each with its own element count, block
 * size and scales (zeropp.md §1.7 P2: one uniform block size would give most elements the wrong
 * scale). Offsets not given continue from the previous segment, so for parameters laid out one
 * after another only `elements` and `blockSize` are needed.
 */
export async function dequantizeSegments<D extends FloatDType>(
    q: Int8Array | Uint8Array,
    scales: Float32Array,
    options: DequantizeSegmentsOptions<D>
): Promise<FloatArrayOf<D>> {
    const site = callSite();
    const fn = "dequantizeSegments";
    checkOptionsObject(fn, options);
    const bits = checkBits(fn, options.bits);
    const outDtype = checkDType(fn, "outDtype", options.outDtype);
    checkCodeArray(fn, "q", q, bits);
    checkScales(fn, "scales", scales);
    const simd = checkSimd(fn, options.simd);
    const threads = checkThreads(fn, options.threads);
    if (!Array.isArray(options.segments)) {
        throw invalid(fn, `segments must be an array, got ${describe(options.segments)}`, {option: "segments"});
    }
    const codes = bits === 8 ? q.length : q.length * 2;
    const segments: {
        elements: number;
        blockSize: number;
        inputOffset: number;
        scaleOffset: number;
        outputOffset: number;
    }[] = [];
    let nextInput = 0;
    let nextScale = 0;
    let nextOutput = 0;
    let outEnd = 0;
    options.segments.forEach((segment: QuantSegment, index) => {
        const at = `segments[${index}]`;
        checkObject(fn, at, segment);
        const elements = checkCount(fn, `${at}.elements`, segment.elements, Number.MAX_SAFE_INTEGER);
        const blockSize = checkBlockSize(fn, `${at}.blockSize`, segment.blockSize);
        const blocks = quantBlockCount(elements, blockSize);
        const inputOffset =
            segment.inputOffset === undefined
                ? nextInput
                : checkCount(fn, `${at}.inputOffset`, segment.inputOffset, Number.MAX_SAFE_INTEGER);
        const scaleOffset =
            segment.scaleOffset === undefined
                ? nextScale
                : checkCount(fn, `${at}.scaleOffset`, segment.scaleOffset, Number.MAX_SAFE_INTEGER);
        const outputOffset =
            segment.outputOffset === undefined
                ? nextOutput
                : checkCount(fn, `${at}.outputOffset`, segment.outputOffset, Number.MAX_SAFE_INTEGER);
        if (inputOffset + elements > codes) {
            throw invalid(fn, `${at}: codes [${inputOffset}, ${inputOffset + elements}) lie outside q's ${codes}`, {
                segment: index
            });
        }
        if (bits === 4 && inputOffset % 2 !== 0) {
            throw invalid(fn, `${at}: an int4 segment must start at an even code, got inputOffset ${inputOffset}`, {
                segment: index
            });
        }
        if (scaleOffset + blocks > scales.length) {
            throw invalid(
                fn,
                `${at}: scales [${scaleOffset}, ${scaleOffset + blocks}) lie outside the ${scales.length} scales`,
                {segment: index}
            );
        }
        segments.push({elements, blockSize, inputOffset, scaleOffset, outputOffset});
        nextInput = inputOffset + elements;
        nextScale = scaleOffset + blocks;
        nextOutput = outputOffset + elements;
        outEnd = Math.max(outEnd, nextOutput);
    });
    const outElements =
        options.outElements === undefined
            ? outEnd
            : checkCount(fn, "outElements", options.outElements, Number.MAX_SAFE_INTEGER, outEnd);
    const byOutput = segments
        .map((segment, index) => ({...segment, index}))
        .filter((segment) => segment.elements > 0)
        .sort((a, b) => a.outputOffset - b.outputOffset);
    for (let i = 1; i < byOutput.length; ++i) {
        const before = byOutput[i - 1]!;
        const after = byOutput[i]!;
        if (before.outputOffset + before.elements > after.outputOffset) {
            throw invalid(fn, `segments[${before.index}] and segments[${after.index}] overlap in the output`, {
                segments: [before.index, after.index]
            });
        }
    }
    const out = outputArray(fn, options.out, outDtype, outElements);
    await callNative(site, () => loadBinding().dequantizeSegments(q, scales, out, {bits, outDtype, segments, simd, threads}));
    return out as FloatArrayOf<D>;
}

/** Converts between fp32, fp16 and bf16 (exact widening, round-to-nearest-even narrowing). */
export async function convertFloats<D extends FloatDType>(
    input: FloatArray,
    options: ConvertFloatsOptions<D>
): Promise<FloatArrayOf<D>> {
    const site = callSite();
    const fn = "convertFloats";
    checkOptionsObject(fn, options);
    const from = checkDType(fn, "from", options.from);
    const to = checkDType(fn, "to", options.to);
    checkFloatArray(fn, "input", input, from);
    const simd = checkSimd(fn, options.simd);
    const threads = checkThreads(fn, options.threads);
    const output = to === "fp32" ? new Float32Array(input.length) : new Uint16Array(input.length);
    await callNative(site, () => loadBinding().convertFloats(input, output, {from, to, simd, threads}));
    return output as FloatArrayOf<D>;
}

/**
 * Measures quantize and dequantize throughput against a single-threaded memcpy, in native code
 * (GB/s = 10^9 bytes per second of the input each consumes; see NativeQuantBenchmarkResult).
 */
export async function quantBenchmark(options: QuantBenchmarkOptions): Promise<QuantBenchmarkResult> {
    const site = callSite();
    const fn = "quantBenchmark";
    checkOptionsObject(fn, options);
    const elements = checkCount(fn, "elements", options.elements, 2 ** 32, 1);
    const dtype = checkDType(fn, "dtype", options.dtype);
    const bits = checkBits(fn, options.bits);
    const blockSize = checkBlockSize(fn, "blockSize", options.blockSize);
    const iterations = checkCount(fn, "iterations", options.iterations, 10_000, 1);
    const threads = checkThreads(fn, options.threads);
    const simd = checkSimd(fn, options.simd);
    return callNative(site, () =>
        loadBinding().quantBenchmark({elements, dtype, bits, blockSize, iterations, threads, simd})
    );
}

// ---------------------------------------------------------------------------------------------
/** What quantizedAllGather (quantizedAllGather.ts) checked, with its defaults filled in. */
export interface CheckedQuantGather {
    readonly dtype: FloatDType;
    readonly bits: QuantBits;
    readonly blockSize: number;
    readonly threads: number;
    /** `out`, or a new array of `outputElements` values of `dtype`. */
    readonly output: FloatArray;
}

/**
 * @internal The checks of quantizedAllGather's quantization options, with this module's
 * validators so that its messages read like quantize's.
 */
export function checkQuantGather(fn: string, input: unknown, options: unknown, outputElements: number): CheckedQuantGather {
    checkOptionsObject(fn, options);
    const o = options as {dtype?: unknown; bits?: unknown; blockSize?: unknown; threads?: unknown; out?: unknown};
    const dtype = checkDType(fn, "dtype", o.dtype);
    const bits = checkBits(fn, o.bits);
    const blockSize = checkBlockSize(fn, "blockSize", o.blockSize);
    checkFloatArray(fn, "input", input, dtype);
    const threads = checkThreads(fn, o.threads);
    const output = outputArray(fn, o.out, dtype, outputElements);
    if (output.buffer === (input as FloatArray).buffer) {
        const a = output.byteOffset;
        const b = (input as FloatArray).byteOffset;
        if (a < b + (input as FloatArray).byteLength && b < a + output.byteLength) throw invalid(fn, "input and out must not overlap");
    }
    return {dtype, bits, blockSize, threads, output};
}

// Validation

function invalid(fn: string, message: string, context: Readonly<Record<string, unknown>> = {}): MixzError {
    return new MixzError(NativeErrorCodes.invalidArgument, `${fn}: ${message}`, {category: "platform", context});
}

function describe(value: unknown): string {
    if (typeof value === "number" || typeof value === "bigint" || typeof value === "boolean") return String(value);
    if (typeof value === "string") return JSON.stringify(value);
    if (value === null) return "null";
    if (ArrayBuffer.isView(value)) return `a ${arrayKind(value)}`;
    if (Array.isArray(value)) return "an array";
    return typeof value === "object" ? "an object" : typeof value;
}

/** "Float32Array", "Uint8Array" (also for a Buffer), …; "" for anything else. */
function arrayKind(value: unknown): string {
    if (!ArrayBuffer.isView(value) || value instanceof DataView) return "";
    const tag: unknown = (value as unknown as Record<symbol, unknown>)[Symbol.toStringTag];
    return typeof tag === "string" ? tag : "";
}

function checkObject(fn: string, what: string, value: unknown): void {
    if (typeof value !== "object" || value === null || Array.isArray(value) || ArrayBuffer.isView(value)) {
        throw invalid(fn, `${what} must be an object, got ${describe(value)}`, {option: what});
    }
}

function checkOptionsObject(fn: string, options: unknown): void {
    checkObject(fn, "options", options);
}

function checkDType(fn: string, what: string, value: unknown): FloatDType {
    if (value !== "fp32" && value !== "fp16" && value !== "bf16") {
        throw invalid(fn, `${what} must be "fp32", "fp16" or "bf16", got ${describe(value)}`, {option: what, value});
    }
    return value;
}

function checkBits(fn: string, value: unknown): QuantBits {
    if (value !== 8 && value !== 4) {
        throw invalid(fn, `bits must be 8 or 4, got ${describe(value)}`, {option: "bits", value});
    }
    return value;
}

function checkBlockSize(fn: string, what: string, value: unknown): number {
    if (
        typeof value !== "number" ||
        !Number.isInteger(value) ||
        value < minQuantBlockSize ||
        value > maxQuantBlockSize ||
        (value & (value - 1)) !== 0
    ) {
        throw invalid(
            fn,
            `${what} must be a power of two in [${minQuantBlockSize}, ${maxQuantBlockSize}], got ${describe(value)}`,
            {option: what, value}
        );
    }
    return value;
}

/** An integer in [min, max]. */
function checkCount(fn: string, what: string, value: unknown, max: number, min = 0): number {
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max) {
        throw invalid(fn, `${what} must be an integer in [${min}, ${max}], got ${describe(value)}`, {
            option: what,
            value
        });
    }
    return value;
}

function checkSimd(fn: string, value: unknown): SimdMode {
    if (value === undefined) {
        const fromEnv = process.env[quantSimdEnvVar];
        if (fromEnv === undefined || fromEnv === "") return "auto";
        if (fromEnv !== "auto" && fromEnv !== "scalar" && fromEnv !== "avx2") {
            throw invalid(fn, `$${quantSimdEnvVar} must be auto, scalar or avx2, got ${JSON.stringify(fromEnv)}`, {
                env: quantSimdEnvVar,
                value: fromEnv
            });
        }
        value = fromEnv;
    }
    if (value !== "auto" && value !== "scalar" && value !== "avx2") {
        throw invalid(fn, `simd must be "auto", "scalar" or "avx2", got ${describe(value)}`, {option: "simd", value});
    }
    if (value === "avx2" && !quantInfo().avx2) {
        throw invalid(fn, "simd \"avx2\" was asked for, but this CPU lacks AVX2, FMA or F16C", {option: "simd", value});
    }
    return value;
}

function checkThreads(fn: string, value: unknown): number {
    if (value === undefined) return 0;
    return checkCount(fn, "threads", value, quantInfo().maxThreads);
}

function checkFloatArray(fn: string, what: string, value: unknown, dtype: FloatDType): void {
    const expected = dtype === "fp32" ? "Float32Array" : "Uint16Array";
    if (arrayKind(value) !== expected) {
        throw invalid(fn, `${what} must be a ${expected} for ${dtype} data, got ${describe(value)}`, {
            option: what,
            dtype
        });
    }
}

function checkCodeArray(fn: string, what: string, value: unknown, bits: QuantBits): Int8Array | Uint8Array {
    const expected = bits === 8 ? "Int8Array" : "Uint8Array";
    if (arrayKind(value) !== expected) {
        throw invalid(fn, `${what} must be an ${expected} for int${bits} codes, got ${describe(value)}`, {
            option: what,
            bits
        });
    }
    return value as Int8Array | Uint8Array;
}

function checkScales(fn: string, what: string, value: unknown): Float32Array {
    if (arrayKind(value) !== "Float32Array") {
        throw invalid(fn, `${what} must be a Float32Array, got ${describe(value)}`, {option: what});
    }
    return value as Float32Array;
}

function checkExactLength(fn: string, what: string, array: ArrayLike<unknown>, expected: number, why: string): void {
    if (array.length !== expected) {
        throw invalid(fn, `${what} has ${array.length} elements, ${why} need exactly ${expected}`, {
            option: what,
            length: array.length,
            expected
        });
    }
}

function outputArray(fn: string, out: unknown, dtype: FloatDType, elements: number): FloatArray {
    if (out === undefined) return dtype === "fp32" ? new Float32Array(elements) : new Uint16Array(elements);
    checkFloatArray(fn, "out", out, dtype);
    const array = out as FloatArray;
    checkExactLength(fn, "out", array, elements, `${elements} ${dtype} values`);
    return array;
}


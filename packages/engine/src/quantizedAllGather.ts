import type {CollectiveOptions, Communicator} from "./Communicator.js";
import {dequantizeSegments, paddedSize, quantBlockCount, quantize, quantizedBytes, type FloatArray, type FloatArrayOf, type FloatDType, type QuantBits} from "./quantize.js";

export interface QuantizedAllGatherOptions<D extends FloatDType> extends CollectiveOptions {
    /** The dtype of `input` and of the output. */
    readonly dtype: D;
    readonly bits: QuantBits;
    /** Elements per quantization block: one block size for the whole run (zeropp.md §1.9). */
    readonly blockSize: number;
    /** Where the gathered tensor goes (size × input elements); allocated when absent. */
    readonly out?: FloatArrayOf<D>;
}

export interface QuantizedAllGatherResult<D extends FloatDType> {
    /** Member m's values at m × input elements, dequantized into the model dtype. */
    readonly output: FloatArrayOf<D>;
    /** Bytes each member put on the wire: its codes and its float32 scales. */
    readonly wireBytesPerRank: number;
}

/**
 * qwZ all-gather: each member quantizes its partition (zero-padded to whole blocks), one
 * all-gather moves every member's codes and scales together in a single buffer (one collective
 * instead of DeepSpeed's two), and every member dequantizes each member's segment with that
 * segment's own scales into the model dtype. The result equals dequantize(quantize(x_m)) of every
 * member's x_m exactly.
 */
export async function quantizedAllGather<D extends FloatDType>(comm: Communicator, input: FloatArray, options: QuantizedAllGatherOptions<D>): Promise<QuantizedAllGatherResult<D>> {
    const {bits, blockSize} = options;
    const elements = input.length;
    const padded = paddedSize(elements, blockSize);
    const codeBytes = quantizedBytes(padded, bits);
    const blocks = quantBlockCount(padded, blockSize);
    // Codes then scales, per member; codeBytes is a multiple of 4 (blocks are ≥ 8 elements), so the
    // scales of every member stay 4-byte aligned in the gathered buffer.
    const stride = codeBytes + 4 * blocks;
    const scratch = takeScratch(comm, stride);
    try {
        return await gatherWith(comm, input, options, scratch, {elements, padded, codeBytes, blocks, stride});
    } finally {
        scratch.busy = false;
    }
}

interface Scratch {
    mine: Uint8Array;
    gathered: Uint8Array;
    busy: boolean;
}

/**
 * Send and receive buffers kept per communicator between calls: fresh ones cost a page fault per
 * 4 KiB on first touch, which measured more than the quantization itself (≈ 4 ms per 8 MiB here).
 * A call that finds them in use (calls overlapping on one communicator) gets buffers of its own.
 */
const scratches = new WeakMap<Communicator, Scratch>();

function takeScratch(comm: Communicator, stride: number): Scratch {
    let scratch = scratches.get(comm);
    if (scratch !== undefined && scratch.busy) return {mine: new Uint8Array(stride), gathered: new Uint8Array(stride * comm.size), busy: true};
    if (scratch === undefined || scratch.mine.length < stride) {
        scratch = {mine: new Uint8Array(stride), gathered: new Uint8Array(stride * comm.size), busy: false};
        scratches.set(comm, scratch);
    }
    scratch.busy = true;
    return scratch;
}

async function gatherWith<D extends FloatDType>(
    comm: Communicator,
    input: FloatArray,
    options: QuantizedAllGatherOptions<D>,
    scratch: Scratch,
    layout: {readonly elements: number; readonly padded: number; readonly codeBytes: number; readonly blocks: number; readonly stride: number}
): Promise<QuantizedAllGatherResult<D>> {
    const {dtype, bits, blockSize} = options;
    const {elements, padded, codeBytes, blocks, stride} = layout;
    const mine = scratch.mine.subarray(0, stride);
    const scales = new Float32Array(mine.buffer, mine.byteOffset + codeBytes, blocks);
    const common = {dtype, blockSize, elements, paddedElements: padded} as const;
    if (bits === 8) await quantize(input, {...common, bits: 8, out: {q: new Int8Array(mine.buffer, mine.byteOffset, codeBytes), scales}});
    else await quantize(input, {...common, bits: 4, out: {q: new Uint8Array(mine.buffer, mine.byteOffset, codeBytes), scales}});
    const gathered = scratch.gathered.subarray(0, stride * comm.size);
    await comm.allGather(mine, gathered, options);
    const allCodes = bits === 8 ? new Int8Array(gathered.buffer, 0, gathered.length) : new Uint8Array(gathered.buffer, 0, gathered.length);
    const allScales = new Float32Array(gathered.buffer, 0, gathered.length / 4);
    const output = await dequantizeSegments(allCodes, allScales, {
        bits,
        outDtype: dtype,
        outElements: elements * comm.size,
        ...(options.out === undefined ? {} : {out: options.out}),
        segments: Array.from({length: comm.size}, (_, member) => ({
            elements,
            blockSize,
            // Codes are counted in elements: one per byte for int8, two per byte for int4.
            inputOffset: member * stride * (bits === 8 ? 1 : 2),
            scaleOffset: (member * stride + codeBytes) / 4,
            outputOffset: member * elements
        }))
    });
    return {output, wireBytesPerRank: stride};
}

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
    const {dtype, bits, blockSize} = options;
    const elements = input.length;
    const padded = paddedSize(elements, blockSize);
    const codeBytes = quantizedBytes(padded, bits);
    const blocks = quantBlockCount(padded, blockSize);
    // Codes then scales, per member; codeBytes is a multiple of 4 (blocks are ≥ 8 elements), so the
    // scales of every member stay 4-byte aligned in the gathered buffer.
    const stride = codeBytes + 4 * blocks;
    const mine = new Uint8Array(stride);
    const scales = new Float32Array(mine.buffer, codeBytes, blocks);
    const common = {dtype, blockSize, elements, paddedElements: padded} as const;
    if (bits === 8) await quantize(input, {...common, bits: 8, out: {q: new Int8Array(mine.buffer, 0, codeBytes), scales}});
    else await quantize(input, {...common, bits: 4, out: {q: new Uint8Array(mine.buffer, 0, codeBytes), scales}});
    const gathered = new Uint8Array(stride * comm.size);
    await comm.allGather(mine, gathered, options);
    const allCodes = bits === 8 ? new Int8Array(gathered.buffer) : new Uint8Array(gathered.buffer);
    const allScales = new Float32Array(gathered.buffer);
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

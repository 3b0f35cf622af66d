import type {CollectiveOptions, Communicator} from "./Communicator.js";
import {checkQuantGather, type FloatArray, type FloatArrayOf, type FloatDType, type QuantBits} from "../quant/quantize.js";

export interface QuantizedAllGatherOptions<D extends FloatDType> extends CollectiveOptions {
    /** The dtype of `input` and of the output. */
    readonly dtype: D;
    readonly bits: QuantBits;
    /** Elements per quantization block: one block size for the whole run (zeropp.md §1.9). */
    readonly blockSize: number;
    /** Where the gathered tensor goes (size × input elements); allocated when absent. */
    readonly out?: FloatArrayOf<D>;
    /** Threads of quantization and dequantization where the transport lets them run apart (Gloo); default: the quantizer's. */
    readonly threads?: number;
}

export interface QuantizedAllGatherResult<D extends FloatDType> {
    /** Member m's values at m × input elements, dequantized into the model dtype. */
    readonly output: FloatArrayOf<D>;
    /** Bytes each member put on the wire: its codes and its float32 scales. */
    readonly wireBytesPerRank: number;
}

/**
 * qwZ all-gather: each member quantizes its partition (zero-padded to whole blocks), one
 * collective moves every member's codes and scales (one instead of DeepSpeed's two), and every
 * member dequantizes each member's segment with that segment's own scales into the model dtype.
 * The result equals dequantize(quantize(x_m)) of every member's x_m exactly.
 *
 * One native call (mixz::comm::quantizedAllgather, native/include/mixz/comm/quantized_allgather.h):
 * over shared memory the partition is quantized straight into the segment and dequantized
 * straight out of it, round by round, with no staging buffer; over Gloo it goes through send
 * and receive buffers the native side keeps between calls.
 */
export async function quantizedAllGather<D extends FloatDType>(comm: Communicator, input: FloatArray, options: QuantizedAllGatherOptions<D>): Promise<QuantizedAllGatherResult<D>> {
    const fn = "quantizedAllGather";
    const elements = (input as {length?: unknown} | null)?.length;
    const {dtype, bits, blockSize, threads, output} = checkQuantGather(fn, input, options, typeof elements === "number" ? elements * comm.size : 0);
    const wireBytesPerRank = await comm._quantizedAllGather(
        {input, output, dtype, outDtype: dtype, elements: input.length, bits, blockSize, threads},
        {...(options.tag === undefined ? {} : {tag: options.tag}), ...(options.timeoutMs === undefined ? {} : {timeoutMs: options.timeoutMs})}
    );
    return {output: output as FloatArrayOf<D>, wireBytesPerRank};
}

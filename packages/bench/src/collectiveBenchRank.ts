// The rank script of `mixz bench allgather|reducescatter`: started on every rank by the launcher,
// with the benchmark's parameters as one JSON argument. Rank 0 prints one
// `MIXZ_BENCH_ROW <json>` line per size (a BenchRow), which the CLI collects; a failure prints
// `MIXZ_BENCH_ERROR <message>` and exits 1.
//
// Timing follows nccl-tests: -w untimed warm-up calls, then -n timed calls back to back; the time
// of a call is the mean over ranks (nccl-tests' -a 1 default) of wall time / n. The check (-c 1)
// runs one extra, untimed call on fresh data and compares every element with the exact expected
// value (for quantized gathers: dequantize(quantize(x_m)) of every member m, computed locally).
import {Communicator, convertFloats, dequantize, quantize, quantizedAllGather, storeExchange, type FloatDType, type QuantBits} from "@mixz/engine";
import {runtime} from "mixz";
import {perRankCount} from "./benchSizes.js";
import {busBandwidth} from "./busBandwidth.js";
import type {CollectiveBenchParams} from "./CollectiveBenchParams.js";
import type {BenchRow} from "./formatBenchTable.js";


const kElementBytes: Record<FloatDType, number> = {fp32: 4, fp16: 2, bf16: 2};
const kTypeNames: Record<FloatDType, string> = {fp32: "float", fp16: "half", bf16: "bfloat16"};

/**
 * Member m's data: small integers, exact in every dtype. Gathered data spans [-100, 100] and differs
 * between any two members of up to 201 (so a swapped chunk is caught); data to be summed stays in
 * [-3, 3] so that sums of many ranks remain exact even in bf16.
 *
 * The values repeat with a period of 201 (or 7) elements, so one period is computed and then
 * copied by doubling (native memcpy): an element-by-element loop over a 256 MiB buffer kept the
 * rank's JavaScript thread busy for seconds on a loaded host, past the launcher's heartbeat limit.
 */
function memberData(dtype: FloatDType, member: number, count: number, salt: number, wide: boolean, offset = 0): Float32Array | Uint16Array {
    const period = wide ? 201 : 7;
    const value = wide ? (j: number): number => ((member * 37 + salt * 11 + j + offset) % 201) - 100 : (j: number): number => ((member * 3 + salt + j + offset) % 7) - 3;
    const bits = (v: number): number => {
        const u = new Uint32Array(new Float32Array([v]).buffer)[0]!;
        // Small integers are exact in both: bf16 is the top half of the float; fp16 from the exponent.
        return dtype === "bf16" ? u >>> 16 : v === 0 ? 0 : ((u >>> 16) & 0x8000) | ((((u >>> 23) & 0xff) - 112) << 10) | ((u >>> 13) & 0x3ff);
    };
    const out = dtype === "fp32" ? new Float32Array(count) : new Uint16Array(count);
    const first = Math.min(period, count);
    for (let i = 0; i < first; i++) out[i] = dtype === "fp32" ? value(i) : bits(value(i));
    // Every filled length stays a multiple of the period, so each copy continues the sequence.
    for (let filled = first; filled < count; filled *= 2) out.copyWithin(filled, 0, Math.min(filled, count - filled));
    return out;
}

async function main(): Promise<void> {
    const params = JSON.parse(process.argv[2] ?? "{}") as CollectiveBenchParams;
    const {rank, worldSize} = runtime;
    const firstLocal = rank - runtime.localRank;
    const localRanks = Array.from({length: runtime.localWorldSize}, (_, i) => firstLocal + i);
    const world = await Communicator.create(
        {rank, worldSize, host: runtime.host, jobId: runtime.jobId, localRanks, timeoutMs: params.timeoutMs, transport: params.transport},
        storeExchange(runtime.store, {prefix: "bench/world", rank, worldSize, timeoutMs: params.timeoutMs})
    );
    const comm = params.hpz > 1 ? await world.group("hpz", params.hpz) : world;
    const n = comm.size;
    const me = comm.rank;
    const elementBytes = kElementBytes[params.dtype];
    const bits: QuantBits = params.quant === "int4" ? 4 : 8;
    let tag = 1;

    for (const size of params.sizes) {
        const count = perRankCount(size, elementBytes, n);
        const wrongTotal = new Float32Array(1);
        let wireBytes = count * elementBytes;
        // Buffers are made once per size, outside the timed loop: the loop times the collective only.
        const inputLength = params.collective === "allgather" ? count : count * n;
        const outputLength = params.collective === "allgather" ? count * n : count;
        const wide = params.collective === "allgather";
        const fresh = (salt: number): Float32Array | Uint16Array => memberData(params.dtype, me, inputLength, salt, wide);
        let input = fresh(0);
        const output = params.dtype === "fp32" ? new Float32Array(outputLength) : new Uint16Array(outputLength);
        const run = async (): Promise<Float32Array | Uint16Array> => {
            if (params.collective === "reducescatter") {
                await comm.reduceScatter(input, output, {tag: tag++, op: "sum", dtype: params.dtype});
                return output;
            }
            if (params.quant === "none") {
                await comm.allGather(input, output, {tag: tag++});
                return output;
            }
            const result = await quantizedAllGather(comm, input, {dtype: params.dtype, bits, blockSize: params.blockSize, tag: tag++, out: output as never});
            wireBytes = result.wireBytesPerRank;
            return result.output;
        };
        for (let i = 0; i < params.warmup; i++) await run();
        await comm.barrier({tag: tag++});
        const started = performance.now();
        for (let i = 0; i < params.iterations; i++) await run();
        const elapsed = new Float32Array([(performance.now() - started) / 1000 / params.iterations]);
        const meanTime = new Float32Array(1);
        // Over the world, not the group: with --hpz every group runs at once and each must count.
        await world.allReduce(elapsed, meanTime, {tag: tag++, op: "mean"});

        let wrong: number | null = null;
        if (params.check) {
            const salt = 1 + (size % 5);
            input = fresh(salt);
            wrongTotal[0] = await countWrong(await run(), salt, count);
            const summed = new Float32Array(1);
            await world.allReduce(wrongTotal, summed, {tag: tag++, op: "sum"});
            wrong = summed[0]!;
        }
        if (rank === 0) {
            const {algbw, busbw} = busBandwidth(params.collective, count, elementBytes, n, meanTime[0]!);
            const row: BenchRow = {size: count * elementBytes * n, count, type: kTypeNames[params.dtype], time_us: meanTime[0]! * 1e6, algbw, busbw, wire_bytes: wireBytes, wrong};
            console.log(`MIXZ_BENCH_ROW ${JSON.stringify(row)}`);
        }
    }
    if (comm !== world) await comm.dispose();
    await world.dispose();

    /** Elements of this member's output that differ from the exact expected values. */
    /**
     * Elements of this member's output that differ from the exact expected values. Built and
     * compared one member's chunk at a time, yielding in between: a 256 MiB check done in one
     * synchronous loop would starve this rank's heartbeats.
     */
    async function countWrong(output: Float32Array | Uint16Array, salt: number, count: number): Promise<number> {
        const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
        let wrong = 0;
        if (params.collective === "reducescatter") {
            // Sums of small integers are exact in fp16 and bf16 too: compare as numbers.
            const sums = new Float32Array(count);
            for (let m = 0; m < n; m++) {
                const data = memberData("fp32", m, count, salt, false, me * count);
                for (let i = 0; i < count; i++) sums[i]! += data[i]!;
                await yieldToLoop();
            }
            const got = params.dtype === "fp32" ? output : await convertFloats(output, {from: params.dtype, to: "fp32"});
            for (let i = 0; i < count; i++) if (got[i] !== sums[i]) wrong++;
            return wrong;
        }
        for (let m = 0; m < n; m++) {
            const x = memberData(params.dtype, m, count, salt, true);
            let expected: Float32Array | Uint16Array = x;
            if (params.quant !== "none") {
                const q = await quantize(x, {dtype: params.dtype, bits, blockSize: params.blockSize});
                expected = await dequantize(q.q, q.scales, {bits, blockSize: params.blockSize, elements: count, outDtype: params.dtype});
            }
            const base = m * count;
            for (let i = 0; i < count; i++) if (output[base + i] !== expected[i]) wrong++;
            await yieldToLoop();
        }
        return wrong;
    }
}

await main().catch((error: unknown) => {
    console.log(`MIXZ_BENCH_ERROR ${(error as Error).message}`);
    process.exit(1);
});

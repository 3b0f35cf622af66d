// qwZ all-gather (issue 4 item 4): every member receives every member's partition as
// dequantize(quantize(x_m)), exactly, over shared memory and over Gloo, for int8 and int4.
import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {dequantize, quantize, quantizedAllGather, type FloatDType, type QuantBits} from "@mixz/engine";
import {disposeAll, inProcessWorld} from "../helpers/inProcessWorld.js";

/** Gaussian-ish data of member m in the given dtype (fp16/bf16 as bit patterns via the engine's conversion). */
async function memberData(dtype: FloatDType, member: number, count: number): Promise<Float32Array | Uint16Array> {
    const values = Float32Array.from({length: count}, (_, i) => 0.02 * Math.sin(1 + member * 7919 + i * 0.37) * (1 + (i % 13)));
    if (dtype === "fp32") return values;
    const {convertFloats} = await import("@mixz/engine");
    return convertFloats(values, {from: "fp32", to: dtype});
}

describe("quantizedAllGather reuses its buffers between calls", () => {
    it("large, small, large again on one communicator, and two calls at once: every result exact", async () => {
        const comms = await inProcessWorld(2, {jobId: "qag-reuse", transport: "shm"});
        try {
            for (const count of [20_000, 3000, 20_000]) {
                const inputs = await Promise.all(comms.map((_, m) => memberData("fp16", m + count, count)));
                const results = await Promise.all(comms.map((comm, m) => quantizedAllGather(comm, inputs[m]!, {dtype: "fp16", bits: 8, blockSize: 1024})));
                const expected = new Uint16Array(count * 2);
                for (let m = 0; m < 2; m++) {
                    const q = await quantize(inputs[m]!, {dtype: "fp16", bits: 8, blockSize: 1024});
                    expected.set(await dequantize(q.q, q.scales, {bits: 8, blockSize: 1024, elements: count, outDtype: "fp16"}), m * count);
                }
                for (const result of results) assert.deepEqual(Array.from(result.output), Array.from(expected), `count ${count}`);
            }
            // Two gathers in flight on each communicator: the second must not share the first's buffers.
            const a = await Promise.all(comms.map((_, m) => memberData("fp16", m, 5000)));
            const b = await Promise.all(comms.map((_, m) => memberData("fp16", m + 50, 5000)));
            const both = await Promise.all(comms.flatMap((comm, m) => [
                quantizedAllGather(comm, a[m]!, {dtype: "fp16", bits: 4, blockSize: 512, tag: 1}),
                quantizedAllGather(comm, b[m]!, {dtype: "fp16", bits: 4, blockSize: 512, tag: 2})
            ]));
            assert.deepEqual(Array.from(both[0]!.output), Array.from(both[2]!.output));
            assert.deepEqual(Array.from(both[1]!.output), Array.from(both[3]!.output));
            assert.notDeepEqual(Array.from(both[0]!.output), Array.from(both[1]!.output));
        } finally {
            await disposeAll(comms);
        }
    });
});

describe("quantizedAllGather", () => {
    const cases: Array<[string, "shm" | "gloo", number, FloatDType, QuantBits, number, number]> = [
        ["shm, 2 ranks, fp16 → int8", "shm", 2, "fp16", 8, 4096, 10_000],
        ["shm, 3 ranks, bf16 → int4, odd size", "shm", 3, "bf16", 4, 256, 1001],
        ["gloo, 2 ranks, fp32 → int8, one element", "gloo", 2, "fp32", 8, 64, 1],
        ["gloo, 4 ranks, fp16 → int4", "gloo", 4, "fp16", 4, 1024, 5000],
        ["shm, 2 ranks, nothing to send", "shm", 2, "fp16", 8, 4096, 0],
        ["one rank (no transport), fp16 → int8, not a block multiple", "shm", 1, "fp16", 8, 1024, 5000],
        ["one rank, bf16 → int4, one element", "gloo", 1, "bf16", 4, 8, 1],
        ["shm, 4 ranks, fp32 → int8, odd size", "shm", 4, "fp32", 8, 256, 999],
        ["shm, 2 ranks, fp16 → int8, several ring rounds, last block partial", "shm", 2, "fp16", 8, 4096, 300_001],
        ["shm, 3 ranks, fp16 → int4, several ring rounds", "shm", 3, "fp16", 4, 4096, 200_000],
        ["gloo, 3 ranks, bf16 → int8, odd size", "gloo", 3, "bf16", 8, 512, 4097],
        ["gloo, 2 ranks, nothing to send", "gloo", 2, "bf16", 4, 64, 0]
    ];
    for (const [name, transport, n, dtype, bits, blockSize, count] of cases) {
        it(name, async () => {
            const comms = await inProcessWorld(n, {jobId: `qag-${transport}-${n}-${bits}-${count}`, transport});
            try {
                const inputs = await Promise.all(comms.map((_, m) => memberData(dtype, m, count)));
                // Half the members pass `out`, half let it be allocated.
                const results = await Promise.all(comms.map((comm, m) => quantizedAllGather(comm, inputs[m]!, {
                    dtype, bits, blockSize, tag: 7,
                    ...(m % 2 === 1 ? {out: (dtype === "fp32" ? new Float32Array(count * n) : new Uint16Array(count * n)) as never} : {})
                })));
                const expected = dtype === "fp32" ? new Float32Array(count * n) : new Uint16Array(count * n);
                for (let m = 0; m < n; m++) {
                    const q = await quantize(inputs[m]!, {dtype, bits, blockSize});
                    expected.set(await dequantize(q.q, q.scales, {bits, blockSize, elements: count, outDtype: dtype}), m * count);
                }
                for (const [member, result] of results.entries()) {
                    assert.equal(result.output.length, count * n);
                    assert.deepEqual(Array.from(result.output), Array.from(expected), `member ${member}`);
                    const padded = Math.ceil(count / blockSize) * blockSize;
                    assert.equal(result.wireBytesPerRank, (bits === 8 ? padded : padded / 2) + 4 * (padded / blockSize));
                }
            } finally {
                await disposeAll(comms);
            }
        });
    }
});

describe("quantizedAllGather rejects bad calls before anything is sent", () => {
    it("bits, block size, dtype against the array kind, out of the wrong length: MIXZ_ERR_INVALID_ARGUMENT, and the communicator still works", async () => {
        const comms = await inProcessWorld(2, {jobId: "qag-bad", transport: "shm"});
        try {
            const input = new Uint16Array(100);
            const bad: Array<[string, Record<string, unknown>]> = [
                ["bits must be 8 or 4", {dtype: "fp16", bits: 3, blockSize: 64}],
                ["blockSize must be a power of two", {dtype: "fp16", bits: 8, blockSize: 100}],
                ["input must be a Float32Array", {dtype: "fp32", bits: 8, blockSize: 64}],
                ["out has 199 elements", {dtype: "fp16", bits: 8, blockSize: 64, out: new Uint16Array(199)}]
            ];
            for (const [message, options] of bad) {
                await assert.rejects(quantizedAllGather(comms[0]!, input, options as never), (error: {code?: string; message?: string}) => {
                    assert.equal(error.code, "MIXZ_ERR_INVALID_ARGUMENT");
                    assert.ok(error.message?.includes(message), error.message);
                    return true;
                });
            }
            const results = await Promise.all(comms.map((comm) => quantizedAllGather(comm, input, {dtype: "fp16", bits: 8, blockSize: 64})));
            for (const result of results) assert.equal(result.output.length, 200);
        } finally {
            await disposeAll(comms);
        }
    });
});

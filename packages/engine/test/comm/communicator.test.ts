// Collective communication through @mixz/engine.
//
// - The native collective suite (mixz/comm/self_test.h) with 1 to 4 ranks as threads of this
//   process, over shared memory, Gloo, and the hierarchical mix (two plan hosts on this machine):
//   all-gather (in and out of place), all-gather with varying sizes, reduce-scatter (sum, mean),
//   all-reduce (sum, mean, max), broadcast and barrier, for fp32, fp16 and bf16 and element counts
//   0, 1, 13, 1001 and 2^21 (8 MiB of fp32), results checked exactly; then the hpZ and cross
//   groups, one of them concurrently with a world collective.
// - Fault scenarios on threads: a stuck peer (timeout naming it), a peer that closes its
//   communicator, a peer that calls another collective.
// - The TypeScript Communicator with ranks as communicators of this process (an in-memory
//   exchange): every collective, groups, validation, timeouts with the event loop free, a broken
//   communicator after an error, and no segment left in /dev/shm.
import assert from "node:assert/strict";
import {readdirSync} from "node:fs";
import {describe, test} from "node:test";

import {MixzError} from "@mixz/protocol";

import {Communicator, loadBinding, NativeErrorCodes, storeExchange} from "@mixz/engine";
import {disposeAll, inProcessWorld} from "../helpers/inProcessWorld.js";
import type {CommTransport, CommunicatorOptions} from "@mixz/engine";

const big = 1 << 21;

/**
 * Shared memory says which copy path it took at connect: single copy through the kernel (CMA)
 * where process_vm_readv is allowed, two copies through the segment where it is refused.
 */
const shm = /^shm \((?:cma|two-copy)\)$/;
const shmGloo = /^shm \((?:cma|two-copy)\)\+gloo$/;

function matchesTransport(actual: string, expected: string | RegExp): boolean {
    return typeof expected === "string" ? actual === expected : expected.test(actual);
}

function leftovers(jobId: string): string[] {
    return readdirSync("/dev/shm").filter((name) => name.startsWith(`mixz-${jobId}-`));
}

describe("native collective suite, ranks as threads", () => {
    const cases: Array<{ranks: number; transport: CommTransport; hosts: string[]; counts: number[]; expected: string | RegExp; cma?: "0" | "1"}> = [];
    for (const transport of ["shm", "gloo"] as const) {
        for (const ranks of [1, 2, 3, 4]) {
            cases.push({ranks, transport, hosts: [], counts: [0, 1, 13, 1001, big], expected: ranks === 1 ? "local" : transport === "shm" ? shm : "gloo"});
        }
    }
    // CMA refused (as under Yama ptrace_scope or in a container): every all-gather takes the rings.
    for (const ranks of [2, 3]) cases.push({ranks, transport: "shm", hosts: [], counts: [0, 1, 1001, big], expected: "shm (two-copy)", cma: "0"});
    // More ranks than CPUs decline the single copy unless told otherwise: its path with 3 and 4 ranks.
    for (const ranks of [3, 4]) cases.push({ranks, transport: "shm", hosts: [], counts: [0, 1, 1001, big], expected: shm, cma: "1"});
    // Two plan hosts on this machine: shared memory inside each, Gloo across (hierarchical all-gather).
    cases.push({ranks: 4, transport: "auto", hosts: ["a", "a", "b", "b"], counts: [0, 1, 13, 1001, big], expected: shmGloo});
    // Unequal nodes: the all-gather falls back to Gloo among all ranks.
    cases.push({ranks: 3, transport: "auto", hosts: ["a", "a", "b"], counts: [0, 1, 13, 1001], expected: "gloo"});
    cases.push({ranks: 2, transport: "auto", hosts: [], counts: [0, 13, 1001], expected: shm});
    for (const {ranks, transport, hosts, counts, expected, cma} of cases) {
        const where = hosts.length === 0 ? "one host" : `hosts ${hosts.join(",")}`;
        test(`${ranks} rank(s), ${transport}, ${where}${cma === undefined ? "" : `, MIXZ_SHM_CMA=${cma}`}`, async () => {
            const jobId = `suite-${transport}-${ranks}-${cma ?? ""}-${process.pid}`;
            // Read by the native side at connect, from this process's environment.
            if (cma !== undefined) process.env.MIXZ_SHM_CMA = cma;
            let report;
            try {
                report = await loadBinding().commSelfTest({
                    ranks, transport, hosts, bindAddress: "127.0.0.1", counts, dtypes: ["fp32", "fp16", "bf16"],
                    timeoutMs: 60_000, groups: true, jobId
                });
            } finally {
                delete process.env.MIXZ_SHM_CMA;
            }
            assert.deepEqual(report.failures, []);
            assert.ok(report.checks >= ranks * counts.length * 3 * 9, `only ${report.checks} checks`);
            assert.ok(matchesTransport(report.transport, expected), `transport ${report.transport}, expected ${String(expected)}`);
            assert.deepEqual(leftovers(jobId), []);
        });
    }
});

describe("native fault scenarios, ranks as threads", () => {
    for (const transport of ["shm", "gloo"] as const) {
        test(`${transport}: a stuck peer makes the others time out naming it, within the timeout`, async () => {
            const report = await loadBinding().commFaultTest({
                ranks: 3, transport, timeoutMs: 800, jobId: `stuck-${process.pid}`, fault: "stuck", victim: 2, bytes: 1 << 20
            });
            for (const rank of [0, 1]) {
                assert.equal(report.codes[rank], NativeErrorCodes.io, report.messages[rank]);
                assert.match(report.messages[rank]!, /allGather \(tag 2\): timed out after 800 ms waiting for rank 2 \(host localhost\)/);
                assert.ok(report.seconds[rank]! >= 0.75 && report.seconds[rank]! < 2.5, `rank ${rank} took ${report.seconds[rank]} s`);
            }
        });
        test(`${transport}: a peer that closes its communicator fails the others at once, naming it`, async () => {
            const report = await loadBinding().commFaultTest({
                ranks: 3, transport, timeoutMs: 20_000, jobId: `closed-${process.pid}`, fault: "closed", victim: 2, bytes: 1 << 20
            });
            for (const rank of [0, 1]) {
                assert.equal(report.codes[rank], NativeErrorCodes.io, report.messages[rank]);
                assert.match(report.messages[rank]!, /rank 2 \(host localhost\): (closed its communicator|connection closed)/);
                assert.ok(report.seconds[rank]! < 5, `rank ${rank} took ${report.seconds[rank]} s`);
            }
        });
    }
    test("shm: a peer that calls another collective is reported, not mixed in", async () => {
        const report = await loadBinding().commFaultTest({
            ranks: 2, transport: "shm", timeoutMs: 20_000, jobId: `mismatch-${process.pid}`, fault: "mismatch", victim: 1, bytes: 4096
        });
        assert.equal(report.codes[1], NativeErrorCodes.invalidArgument, report.messages[1]);
        assert.match(report.messages[1]!, /broadcast \(tag 2\) is collective #2 on this rank, but rank 0 \(host localhost\) sent data of its collective #2, allGather \(tag 2\)/);
        assert.equal(report.codes[0], NativeErrorCodes.io);
        assert.match(report.messages[0]!, /rank 1 \(host localhost\): gave up on the collective/);
    });
});

/** Builds `n` communicators in this process, as ranks of one job, through an in-memory exchange. */
function codeOf(error: unknown): string | undefined {
    return error instanceof MixzError ? error.code : undefined;
}

describe("Communicator (TypeScript), ranks as communicators of this process", () => {
    for (const transport of ["shm", "gloo"] as const) {
        test(`${transport}: every collective on 3 ranks`, async () => {
            const jobId = `ts-${transport}-${process.pid}`;
            const comms = await inProcessWorld(3, {jobId, transport});
            try {
                // Segments are unlinked as soon as every member has mapped them.
                assert.deepEqual(leftovers(jobId), []);
                assert.deepEqual(comms.map((c) => [c.rank, c.size, c.kind]), [0, 1, 2].map((r) => [r, 3, "world"]));
                for (const c of comms) assert.ok(matchesTransport(c.transport, transport === "shm" ? shm : "gloo"), c.transport);
                assert.deepEqual(comms[1]!.members.map((m) => [m.rank, m.host, m.pid]), [0, 1, 2].map((r) => [r, "localhost", process.pid]));

                // all-gather of Float32Array, out of place and in place
                const outputs = comms.map(() => new Float32Array(3 * 5));
                await Promise.all(comms.map((c, r) => c.allGather(Float32Array.from({length: 5}, (_, i) => r * 10 + i), outputs[r]!, {tag: 1})));
                const expected = Float32Array.from({length: 15}, (_, i) => Math.floor(i / 5) * 10 + (i % 5));
                for (const output of outputs) assert.deepEqual(output, expected);
                const inPlace = comms.map((_, r) => {
                    const output = new Int32Array(6);
                    output.set([r, -r], 2 * r);
                    return output;
                });
                await Promise.all(comms.map((c, r) => c.allGather(inPlace[r]!.subarray(2 * r, 2 * r + 2), inPlace[r]!, {tag: 2})));
                for (const output of inPlace) assert.deepEqual([...output], [0, 0, 1, -1, 2, -2]);

                // all-gather with varying sizes, one member contributing nothing
                const counts = [2, 0, 3];
                const gathered = comms.map(() => new Uint8Array(5));
                await Promise.all(comms.map((c, r) => c.allGatherV(new Uint8Array(counts[r]!).fill(r + 1), gathered[r]!, counts)));
                for (const output of gathered) assert.deepEqual([...output], [1, 1, 3, 3, 3]);

                // reduce-scatter sum and mean; all-reduce sum (in place), max; broadcast; barrier
                const rsOut = comms.map(() => new Float32Array(2));
                await Promise.all(comms.map((c, r) => c.reduceScatter(Float32Array.from([1, 2, 3, 4, 5, 6], (x) => x * (r + 1)), rsOut[r]!)));
                assert.deepEqual(rsOut.map((o) => [...o]), [[6, 12], [18, 24], [30, 36]]);
                await Promise.all(comms.map((c, r) => c.reduceScatter(Float32Array.from([1, 2, 3, 4, 5, 6], (x) => x * (r + 1)), rsOut[r]!, {op: "mean"})));
                assert.deepEqual(rsOut.map((o) => [...o]), [[2, 4], [6, 8], [10, 12]]);
                const arBuffers = comms.map((_, r) => Float32Array.from([r, -r, 0.5]));
                await Promise.all(comms.map((c, r) => c.allReduce(arBuffers[r]!, arBuffers[r]!)));
                for (const buffer of arBuffers) assert.deepEqual([...buffer], [3, -3, 1.5]);
                // bf16 max: 1.0 = 0x3F80, 2.0 = 0x4000, -1.0 = 0xBF80
                const bfOut = comms.map(() => new Uint16Array(1));
                const bfIn = [0x3F80, 0x4000, 0xBF80];
                await Promise.all(comms.map((c, r) => c.allReduce(Uint16Array.of(bfIn[r]!), bfOut[r]!, {op: "max", dtype: "bf16"})));
                for (const output of bfOut) assert.equal(output[0], 0x4000);
                const broadcastBuffers = comms.map((_, r) => new Float64Array(4).fill(r === 1 ? 7.25 : 0));
                await Promise.all(comms.map((c, r) => c.broadcast(broadcastBuffers[r]!, {root: 1, tag: 9})));
                for (const buffer of broadcastBuffers) assert.deepEqual([...buffer], [7.25, 7.25, 7.25, 7.25]);
                await Promise.all(comms.map((c) => c.barrier({tag: 10, timeoutMs: 5_000})));
            } finally {
                await disposeAll(comms);
            }
            assert.deepEqual(leftovers(jobId), []);
        });
    }

    test("groups: hpZ blocks and the cross group over two plan hosts (shm inside, Gloo across)", async () => {
        const jobId = `ts-groups-${process.pid}`;
        const comms = await inProcessWorld(4, {jobId, hosts: ["a", "a", "b", "b"]});
        try {
            for (const c of comms) assert.match(c.transport, shmGloo);
            const outputs = comms.map(() => new Uint32Array(8));
            await Promise.all(comms.map((c, r) => c.allGather(Uint32Array.of(r, 100 + r), outputs[r]!)));
            for (const output of outputs) assert.deepEqual([...output], [0, 100, 1, 101, 2, 102, 3, 103]);

            const hpz = await Promise.all(comms.map((c) => c.group("hpz", 2, {tag: 1})));
            assert.deepEqual(hpz.map((g) => [g.kind, g.rank, g.size, g.members.map((m) => m.rank).join(",")]),
                [["hpz", 0, 2, "0,1"], ["hpz", 1, 2, "0,1"], ["hpz", 0, 2, "2,3"], ["hpz", 1, 2, "2,3"]]);
            for (const g of hpz) assert.match(g.transport, shm);
            const cross = await Promise.all(comms.map((c) => c.group("cross", {tag: 2})));
            assert.deepEqual(cross.map((g) => [g.rank, g.size, g.transport, g.members.map((m) => m.rank).join(",")]),
                [[0, 2, "gloo", "0,2"], [0, 2, "gloo", "1,3"], [1, 2, "gloo", "0,2"], [1, 2, "gloo", "1,3"]]);
            assert.deepEqual(leftovers(jobId), []);

            // A group collective and a world collective at the same time.
            const sums = comms.map((_, r) => Float32Array.of(r + 1));
            const gathered = comms.map(() => new Float32Array(2));
            await Promise.all([
                ...hpz.map((g, r) => g.allGather(Float32Array.of(r * 2), gathered[r]!)),
                ...comms.map((c, r) => c.allReduce(sums[r]!, sums[r]!))
            ]);
            assert.deepEqual(gathered.map((g) => [...g]), [[0, 2], [0, 2], [4, 6], [4, 6]]);
            for (const sum of sums) assert.equal(sum[0], 10);
            const crossSums = comms.map((_, r) => Float32Array.of(r));
            await Promise.all(cross.map((g, r) => g.allReduce(crossSums[r]!, crossSums[r]!)));
            assert.deepEqual(crossSums.map((s) => s[0]), [2, 4, 2, 4]);
            await disposeAll([...hpz, ...cross]);
        } finally {
            await disposeAll(comms);
        }
        assert.deepEqual(leftovers(jobId), []);
    });

    test("invalid calls are rejected in TypeScript with MIXZ_ERR_INVALID_ARGUMENT, and the communicator stays usable", async () => {
        const jobId = `ts-invalid-${process.pid}`;
        const comms = await inProcessWorld(2, {jobId});
        const [a] = comms;
        try {
            const cases: Array<[string, () => unknown, RegExp]> = [
                ["output too short", () => a!.allGather(new Float32Array(3), new Float32Array(5)), /output must have size × input.length = 2 × 3 = 6 elements, got 5/],
                ["mixed kinds", () => a!.allGather(new Float32Array(1), new Uint32Array(2)), /same kind/],
                ["not a typed array", () => a!.allGather([1] as unknown as Float32Array, new Float32Array(2)), /input must be a typed array, got an array/],
                ["negative tag", () => a!.barrier({tag: -1}), /tag must be an integer in \[0, 4294967295\], got -1/],
                ["zero timeout", () => a!.barrier({timeoutMs: 0}), /timeoutMs must be an integer in \[1, 2147483647\], got 0/],
                ["Uint16Array without dtype", () => a!.allReduce(new Uint16Array(2), new Uint16Array(2)), /dtype must say which/],
                ["Float32Array as bf16", () => a!.allReduce(new Float32Array(2), new Float32Array(2), {dtype: "bf16"}), /a Float32Array holds fp32/],
                ["max in reduce-scatter", () => a!.reduceScatter(new Float32Array(2), new Float32Array(1), {op: "max"}), /op must be sum or mean/],
                ["reduce-scatter sizes", () => a!.reduceScatter(new Float32Array(3), new Float32Array(1)), /input must have size × output.length = 2 × 1 = 2 elements, got 3/],
                ["root outside", () => a!.broadcast(new Uint8Array(1), {root: 2}), /root must be an integer in \[0, 1\], got 2/],
                ["counts length", () => a!.allGatherV(new Uint8Array(1), new Uint8Array(1), [1]), /counts must be an array of 2/],
                ["hpz size", () => a!.group("hpz", 3), /h must be an integer in \[1, 2\], got 3/]
            ];
            for (const [name, run, message] of cases) {
                assert.throws(run, (error: unknown) => codeOf(error) === NativeErrorCodes.invalidArgument && message.test((error as Error).message), name);
            }
            // Overlapping buffers are caught natively, before anything is sent.
            const shared = new Float32Array(4);
            await assert.rejects(a!.allGather(shared.subarray(1, 3), shared), (error: unknown) =>
                codeOf(error) === NativeErrorCodes.invalidArgument && /input and output overlap/.test((error as Error).message));
            const outputs = comms.map(() => new Float32Array(2));
            await Promise.all(comms.map((c, r) => c.allGather(Float32Array.of(r), outputs[r]!)));
            assert.deepEqual([...outputs[0]!], [0, 1]);
        } finally {
            await disposeAll(comms);
        }
        assert.throws(() => a!.barrier(), (error: unknown) => codeOf(error) === NativeErrorCodes.invalidArgument);
    });

    for (const transport of ["shm", "gloo"] as const) {
        test(`${transport}: a peer that does not come times out naming it, the event loop stays free, and the communicator is then broken`, async () => {
            const jobId = `ts-timeout-${transport}-${process.pid}`;
            const comms = await inProcessWorld(2, {jobId, transport});
            try {
                let ticks = 0;
                const timer = setInterval(() => ticks++, 20);
                const started = Date.now();
                const error: unknown = await comms[0]!.allGather(new Float32Array(4), new Float32Array(8), {tag: 5, timeoutMs: 600}).catch((e: unknown) => e);
                clearInterval(timer);
                const elapsed = Date.now() - started;
                assert.equal(codeOf(error), NativeErrorCodes.io);
                assert.equal((error as MixzError).category, "infra");
                assert.match((error as Error).message, /^allGather \(tag 5\): timed out after 600 ms waiting for rank 1 \(host localhost\)$/);
                assert.match((error as Error).stack ?? "", /communicator\.test\.ts/);
                assert.ok(elapsed >= 550 && elapsed < 2_000, `took ${elapsed} ms`);
                assert.ok(ticks >= 10, `the event loop ran only ${ticks} timer ticks`);
                await assert.rejects(comms[0]!.barrier(), (e: unknown) => codeOf(e) === NativeErrorCodes.io && /failed earlier and must be rebuilt/.test((e as Error).message));
            } finally {
                await disposeAll(comms);
            }
            assert.deepEqual(leftovers(jobId), []);
        });
    }

    test("shm: abort() ends this rank's collective in flight and fails its peers at once", async () => {
        const jobId = `ts-abort-${process.pid}`;
        const comms = await inProcessWorld(2, {jobId, transport: "shm"});
        try {
            const started = Date.now();
            const pending = comms[0]!.allGather(new Float32Array(4), new Float32Array(8), {tag: 3}).catch((e: unknown) => e);
            setTimeout(() => comms[0]!.abort("the script failed"), 100);
            const error = await pending;
            assert.equal(codeOf(error), NativeErrorCodes.io);
            assert.match((error as Error).message, /^allGather \(tag 3\): aborted on this rank: the script failed$/);
            assert.ok(Date.now() - started < 5_000);
            // Rank 1's all-gather finds rank 0's data already there and completes; its next call
            // needs rank 0 and fails without waiting for the timeout.
            await comms[1]!.allGather(new Float32Array(4), new Float32Array(8), {tag: 3});
            const peerError: unknown = await comms[1]!.barrier({tag: 4}).catch((e: unknown) => e);
            assert.equal(codeOf(peerError), NativeErrorCodes.io);
            assert.match((peerError as Error).message, /rank 0 \(host localhost\): gave up on the collective: the script failed/);
        } finally {
            await disposeAll(comms);
        }
    });

    test("an exchange that returns the wrong addresses is a clear error", async () => {
        const jobId = `ts-exchange-${process.pid}`;
        const options = {rank: 0, worldSize: 2, host: "localhost", jobId, localRanks: [0], timeoutMs: 2_000, transport: "gloo" as const, bindAddress: "127.0.0.1"};
        await assert.rejects(Communicator.create(options, async (mine) => [mine]), /exchange must resolve with 2 Uint8Array addresses/);
        await assert.rejects(Communicator.create(options, async (mine) => [mine, mine]), (error: unknown) =>
            codeOf(error) === NativeErrorCodes.invalidArgument && /addresses\[1\] is the address of rank 0/.test((error as Error).message));
        await assert.rejects(Communicator.create(options, async (mine) => [mine, new Uint8Array(3)]), /address of rank 1 is not a mixz communicator address/);
        assert.deepEqual(leftovers(jobId), []);
    });
});

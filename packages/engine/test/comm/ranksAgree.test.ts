// "Ranks agree on the outcome" over real in-process communicators: whoever fails, every rank ends
// the same way — the failing rank with its own error, the others with one naming it.
import assert from "node:assert/strict";
import {describe, it} from "node:test";

import {everyRankTries, rootTries, type AgreementChannel, type Communicator} from "@mixz/engine";
import {MixzError} from "@mixz/protocol";
import {disposeAll, inProcessWorld} from "../helpers/inProcessWorld.js";

let jobs = 0;

function channel(comm: Communicator): AgreementChannel {
    return {
        rank: comm.rank,
        worldSize: comm.size,
        broadcast: (buffer, tag) => comm.broadcast(buffer, {root: 0, tag}),
        allGather: (input, output, tag) => comm.allGather(input, output, {tag})
    };
}

async function world(n: number): Promise<Communicator[]> {
    return inProcessWorld(n, {jobId: `agree-${process.pid}-${jobs++}`});
}

const failure = {fn: "load", target: "/some/dir", consequence: "nothing was loaded on any rank"};

describe("everyRankTries", () => {
    it("all succeed: each rank gets its own value", async () => {
        const comms = await world(3);
        try {
            const values = await Promise.all(comms.map((c) => everyRankTries(channel(c), 11, failure, async () => c.rank * 10)));
            assert.deepEqual(values, [0, 10, 20]);
        } finally {
            await disposeAll(comms);
        }
    });

    it("ranks 1 and 2 fail: they throw their own errors, rank 0 names both; cleanup runs on every rank", async () => {
        const comms = await world(3);
        const cleaned: number[] = [];
        try {
            const results = await Promise.allSettled(comms.map((c) => everyRankTries(channel(c), 12, {
                ...failure,
                ownError: (error) => new Error(`own: ${(error as Error).message}`),
                cleanup: async () => void cleaned.push(c.rank)
            }, async () => {
                if (c.rank > 0) throw new Error(`disk ${c.rank}`);
                return "ok";
            })));
            assert.equal(results[0]!.status, "rejected");
            const peer = (results[0] as PromiseRejectedResult).reason as MixzError;
            assert.ok(peer instanceof MixzError);
            assert.equal(peer.message, `load("/some/dir"): ranks 1, 2 failed (see their error); nothing was loaded on any rank`);
            assert.deepEqual(peer.context["ranks"], [1, 2]);
            assert.deepEqual(results.slice(1).map((r) => ((r as PromiseRejectedResult).reason as Error).message), ["own: disk 1", "own: disk 2"]);
            assert.deepEqual(cleaned.sort(), [0, 1, 2]);
        } finally {
            await disposeAll(comms);
        }
    });

    it("one rank: its failure is its own error", async () => {
        const comms = await world(1);
        try {
            await assert.rejects(everyRankTries(channel(comms[0]!), 13, failure, async () => { throw new RangeError("bad"); }), RangeError);
        } finally {
            await disposeAll(comms);
        }
    });
});

describe("rootTries", () => {
    it("rank 0's words reach every rank; only rank 0 runs the attempt", async () => {
        const comms = await world(3);
        const ran: number[] = [];
        try {
            const words = await Promise.all(comms.map((c) => rootTries(channel(c), 14, failure, async () => {
                ran.push(c.rank);
                return Uint32Array.of(0xdeadbeef, 7);
            }, 2)));
            assert.deepEqual(ran, [0]);
            for (const w of words) assert.deepEqual([...w], [0xdeadbeef, 7]);
        } finally {
            await disposeAll(comms);
        }
    });

    it("rank 0 fails: it throws its own error, the others one naming rank 0", async () => {
        const comms = await world(2);
        try {
            const results = await Promise.allSettled(comms.map((c) => rootTries(channel(c), 15, {...failure, code: "MIXZ_ERR_CHECKPOINT_STATE"}, async () => {
                throw new Error("EACCES");
            })));
            assert.equal(((results[0] as PromiseRejectedResult).reason as Error).message, "EACCES");
            const peer = (results[1] as PromiseRejectedResult).reason as MixzError;
            assert.equal(peer.code, "MIXZ_ERR_CHECKPOINT_STATE");
            assert.match(peer.message, /rank 0 failed \(see its error\)/);
        } finally {
            await disposeAll(comms);
        }
    });

    it("more words than announced is a failure of rank 0, seen by all", async () => {
        const comms = await world(2);
        try {
            const results = await Promise.allSettled(comms.map((c) => rootTries(channel(c), 16, failure, async () => Uint32Array.of(1, 2, 3), 2)));
            assert.ok(results.every((r) => r.status === "rejected"));
            assert.ok(((results[0] as PromiseRejectedResult).reason as Error) instanceof RangeError);
        } finally {
            await disposeAll(comms);
        }
    });
});

import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {ErrorCodes} from "@mixz/protocol";
import {BarrierTable} from "../src/BarrierTable.js";
import type {WaitOutcome} from "../src/KvStore.js";

const describeRank = (rank: number): string => `rank ${rank} (host h${rank})`;

describe("BarrierTable", () => {
    it("the last arrival completes the generation for everyone, itself included", () => {
        const table = new BarrierTable(3, describeRank);
        const done: number[] = [];
        table.arrive("b", 0, 1000, () => done.push(0));
        table.arrive("b", 2, 1000, () => done.push(2));
        assert.equal(done.length, 0);
        table.arrive("b", 1, 1000, () => done.push(1));
        assert.deepEqual(done.sort(), [0, 1, 2]);
        assert.equal(table.pendingWaits, 0);
    });

    it("generations: a rank's second call waits for the others' second calls", () => {
        const table = new BarrierTable(2, describeRank);
        const done: string[] = [];
        table.arrive("b", 0, 1000, () => done.push("r0 g0"));
        table.arrive("b", 0, 1000, () => done.push("r0 g1"));
        assert.equal(done.length, 0);
        table.arrive("b", 1, 1000, () => done.push("r1 g0"));
        assert.deepEqual(done, ["r0 g0", "r1 g0"]);
        table.arrive("b", 1, 1000, () => done.push("r1 g1"));
        assert.deepEqual(done, ["r0 g0", "r1 g0", "r0 g1", "r1 g1"]);
    });

    it("a world of one passes at once", () => {
        const table = new BarrierTable(1, describeRank);
        let outcome: WaitOutcome | undefined;
        table.arrive("solo", 0, 1000, (o) => (outcome = o));
        assert.deepEqual(outcome, {ok: true, values: []});
    });

    it("a timeout names the absent ranks; a rank that timed out still counts as arrived", async () => {
        const table = new BarrierTable(3, describeRank);
        const outcomes: Array<[number, WaitOutcome]> = [];
        table.arrive("init", 0, 20, (o) => outcomes.push([0, o]));
        await new Promise((resolve) => setTimeout(resolve, 60));
        assert.equal(outcomes.length, 1);
        const [, timeout] = outcomes[0]!;
        assert.ok(!timeout.ok);
        assert.equal(timeout.code, ErrorCodes.storeTimeout);
        assert.equal(timeout.message, `barrier "init" (call 1) timed out after 20 ms: 2 of 3 ranks did not arrive: rank 1 (host h1), rank 2 (host h2)`);
        table.arrive("init", 1, 1000, (o) => outcomes.push([1, o]));
        table.arrive("init", 2, 1000, (o) => outcomes.push([2, o]));
        assert.deepEqual(outcomes.slice(1), [[1, {ok: true, values: []}], [2, {ok: true, values: []}]]);
    });

    it("cancel ends a wait silently; failAll fails the others", () => {
        const table = new BarrierTable(3, describeRank);
        const outcomes: Array<[number, WaitOutcome]> = [];
        const cancel = table.arrive("b", 0, 1000, (o) => outcomes.push([0, o]));
        table.arrive("b", 1, 1000, (o) => outcomes.push([1, o]));
        table.arrive("other", 1, 1000, (o) => outcomes.push([1, o]));
        cancel();
        table.failAll(ErrorCodes.aborted, "stop");
        assert.deepEqual(outcomes, [[1, {ok: false, code: ErrorCodes.aborted, message: "stop"}], [1, {ok: false, code: ErrorCodes.aborted, message: "stop"}]]);
        assert.equal(table.pendingWaits, 0);
    });
});

describe("BarrierTable with ranks that left the job", () => {
    it("a departure fails the waiting ranks at once, naming the rank that left", () => {
        const table = new BarrierTable(3, describeRank);
        const outcomes: WaitOutcome[] = [];
        table.arrive("b", 1, 60_000, (outcome) => outcomes.push(outcome));
        table.arrive("b", 2, 60_000, (outcome) => outcomes.push(outcome));
        table.rankDeparted(0, "has finished (exit code 0)");
        assert.equal(outcomes.length, 2);
        for (const outcome of outcomes) {
            assert.equal(outcome.ok, false);
            if (!outcome.ok) {
                assert.equal(outcome.code, ErrorCodes.rankDeparted);
                assert.match(outcome.message, /barrier "b" \(call 1\) can never complete: rank 0 \(host h0\) has finished \(exit code 0\)/);
            }
        }
        assert.equal(table.pendingWaits, 0);
    });
    it("a later arrival at a barrier the departed rank never reached fails immediately", () => {
        const table = new BarrierTable(2, describeRank);
        table.rankDeparted(1, "was lost (missed heartbeats)");
        let outcome: WaitOutcome | undefined;
        table.arrive("b", 0, 60_000, (o) => (outcome = o));
        assert.equal(outcome?.ok, false);
        assert.equal(table.pendingWaits, 0);
    });
    it("a generation the departed rank had already reached still completes", () => {
        const table = new BarrierTable(2, describeRank);
        const done: boolean[] = [];
        table.arrive("b", 1, 60_000, (o) => done.push(o.ok));
        table.rankDeparted(1, "has disconnected");
        table.arrive("b", 0, 60_000, (o) => done.push(o.ok));
        assert.deepEqual(done, [true, true]);
    });
});

import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {ErrorCodes} from "@mixz/protocol";
import {KvStore, type WaitOutcome} from "../src/KvStore.js";

function bytes(text: string): Uint8Array {
    return new TextEncoder().encode(text);
}

function text(outcome: WaitOutcome | undefined): string[] | string {
    if (outcome === undefined) return "pending";
    return outcome.ok ? outcome.values.map((v) => new TextDecoder().decode(v)) : `${outcome.code}: ${outcome.message}`;
}

describe("KvStore", () => {
    it("a wait on keys already set settles before wait() returns", () => {
        const store = new KvStore();
        store.set("a", bytes("1"));
        let outcome: WaitOutcome | undefined;
        store.wait(["a", "a"], 1000, (o) => (outcome = o));
        assert.deepEqual(text(outcome), ["1", "1"]);
        assert.equal(store.pendingWaits, 0);
    });

    it("a wait settles on the last missing key, with the values at that moment, in order", () => {
        const store = new KvStore();
        let outcome: WaitOutcome | undefined;
        store.wait(["b", "a", "c"], 1000, (o) => (outcome = o));
        store.set("a", bytes("a1"));
        store.set("a", bytes("a2"));
        store.set("b", bytes("b"));
        assert.equal(text(outcome), "pending");
        store.set("c", bytes("c"));
        assert.deepEqual(text(outcome), ["b", "a2", "c"]);
        assert.equal(store.pendingWaits, 0);
    });

    it("a timeout names the missing keys and settles once", async () => {
        const store = new KvStore();
        const outcomes: WaitOutcome[] = [];
        store.set("here", bytes("x"));
        store.wait(["here", "gone", "lost"], 30, (o) => outcomes.push(o));
        await new Promise((resolve) => setTimeout(resolve, 80));
        store.set("gone", bytes("late"));
        store.set("lost", bytes("late"));
        assert.equal(outcomes.length, 1);
        assert.match(text(outcomes[0]) as string, new RegExp(`^${ErrorCodes.storeTimeout}: kv_wait timed out after 30 ms: 2 of 3 keys never set: "gone", "lost"$`));
        assert.equal(store.pendingWaits, 0);
    });

    it("a long list of missing keys is shortened", async () => {
        const store = new KvStore();
        let outcome: WaitOutcome | undefined;
        store.wait(Array.from({length: 100}, (_, i) => `k${i}`), 10, (o) => (outcome = o));
        await new Promise((resolve) => setTimeout(resolve, 50));
        assert.match(text(outcome) as string, /"k15" and 84 more$/);
    });

    it("cancel removes the wait without settling it; failAll settles the rest", () => {
        const store = new KvStore();
        const outcomes: Array<[string, WaitOutcome]> = [];
        const cancel = store.wait(["x"], 1000, (o) => outcomes.push(["cancelled", o]));
        store.wait(["x", "y"], 1000, (o) => outcomes.push(["failed", o]));
        cancel();
        cancel();
        assert.equal(store.pendingWaits, 1);
        store.failAll(ErrorCodes.aborted, "stop");
        store.set("x", bytes("1"));
        store.set("y", bytes("2"));
        assert.deepEqual(outcomes, [["failed", {ok: false, code: ErrorCodes.aborted, message: "stop"}]]);
        assert.equal(store.pendingWaits, 0);
    });
});

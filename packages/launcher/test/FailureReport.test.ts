import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {exitCodeOf, formatFailureReport, kSignalPreferenceMs, rootCauseOf, type RankFailure} from "../src/FailureReport.js";

const base: RankFailure = {kind: "exit", rank: 3, host: "node-b", localRank: 1, pid: 4242, time: new Date(2026, 10, 25, 22, 59, 52), code: 3, signal: null, stderrTail: ["boom"]};

describe("exitCodeOf", () => {
    const cases: Array<[Partial<RankFailure>, number]> = [
        [{code: 3}, 3], [{code: 255}, 255], [{code: 0}, 1], [{code: null, signal: "SIGKILL"}, 137], [{code: null, signal: "SIGSEGV"}, 139],
        [{code: null, signal: "SIGTERM"}, 143], [{kind: "heartbeat", code: null}, 1], [{kind: "join_timeout", code: null}, 1], [{kind: "disconnected", code: null}, 1]
    ];
    for (const [change, code] of cases) it(`${JSON.stringify(change)} → ${code}`, () => assert.equal(exitCodeOf({...base, ...change}), code));
});

describe("formatFailureReport", () => {
    it("the earliest failure is the root cause; others follow; signals are named", () => {
        const later: RankFailure = {...base, rank: 5, localRank: 0, host: "node-c", pid: 7, time: new Date(base.time.getTime() + 1000), code: null, signal: "SIGKILL", stderrTail: []};
        const text = formatFailureReport("train.ts", "abc123", [later, base], 2);
        assert.match(text, /^={60}\nmixz launch FAILED: train\.ts \(job abc123\)\n-{60}\nRoot cause \(first observed failure\):\n {2}time {6}: 2026-11-25_22:59:52\n {2}host {6}: node-b\n {2}rank {6}: 3 \(local_rank: 1\)\n {2}exitcode {2}: 3 \(pid: 4242\)\n {2}stderr \(last 1 lines\):\n {4}\| boom\n/);
        assert.match(text, /Other failures:\n(.*\n)* {2}rank {6}: 5 \(local_rank: 0\)\n {2}exitcode {2}: killed by signal 9 \(SIGKILL\) \(pid: 7\)/);
        assert.match(text, /Stopped by the launcher: 2 rank\(s\) still running at the time\n={60}\n$/);
    });
    it("kinds other than exit show the reason; a daemon's error message is shown", () => {
        const text = formatFailureReport("t.ts", "j", [{...base, kind: "heartbeat", code: null, detail: "no heartbeat for 6.0 s", error: "Error: x\n  at y"}], 0);
        assert.match(text, / {2}reason {4}: no heartbeat for 6\.0 s \(pid: 4242\)\n {2}error {5}: Error: x\n/);
        assert.match(text, /Other failures:\n {2}<none>/);
    });
});

describe("rootCauseOf", () => {
    it("the earliest failure", () => {
        const a = {...base, rank: 1, time: new Date(1000)};
        const b = {...base, rank: 2, time: new Date(5000), code: null, signal: "SIGKILL"};
        assert.equal(rootCauseOf([b, a])?.rank, 1);
    });
    it("a signal death right after a peer's error exit is the likelier cause", () => {
        const peer = {...base, rank: 0, time: new Date(1000), code: 3};
        const killed = {...base, rank: 1, time: new Date(1000 + kSignalPreferenceMs - 10), code: null, signal: "SIGKILL"};
        assert.equal(rootCauseOf([peer, killed])?.rank, 1);
        assert.equal(exitCodeOf(rootCauseOf([peer, killed])!), 137);
    });
    it("nothing failed", () => assert.equal(rootCauseOf([]), undefined));
});

// Killed, hung, failing ranks and a killed or interrupted launcher: every case ends with the right
// exit code and summary, and nothing of the job left running (ranks and their children).
import assert from "node:assert/strict";
import {mkdtempSync, readdirSync, readFileSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";
import {fixture, isAlive, runMixz, startMixz, waitGone} from "../helpers/mixzProcess.js";

const script = fixture("faults/fixtures/misbehave.ts");
const scratch = mkdtempSync(join(tmpdir(), "mixz-faults-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

/** Fast health checks so that the tests stay short: heartbeats every 250 ms, lost after 3 misses. */
const quick = ["--master-port", "0", "--heartbeat-interval", "0.25", "--grace-period", "1"];

/** The pids a run's ranks recorded (daemons and their `sleep` children). */
function pidsIn(dir: string): number[] {
    return readdirSync(dir).map((name) => Number(readFileSync(join(dir, name), "utf8")));
}

async function assertNothingLeft(dir: string): Promise<void> {
    const pids = pidsIn(dir);
    assert.ok(pids.length > 0, "the ranks recorded their pids");
    assert.deepEqual(await waitGone(pids, 5000), [], "processes of the job still alive");
}

function newPidDir(): string {
    return mkdtempSync(join(scratch, "pids-"));
}

describe("a failing rank ends the job", () => {
    const cases: Array<[string, number, RegExp]> = [
        ["exit3", 3, / {2}exitcode {2}: 3 \(pid: \d+\)/],
        ["throw", 1, / {2}error {5}: deliberate failure in the training script/],
        ["sigkill", 137, / {2}exitcode {2}: killed by signal 9 \(SIGKILL\) \(pid: \d+\)/],
        ["hang", 1, / {2}reason {4}: no heartbeat for 0\.8 s: the rank is stuck or unreachable/]
    ];
    for (const [mode, code, summary] of cases) {
        it(`${mode}: exit ${code}, root cause rank 1, no process left`, async () => {
            const pidDir = newPidDir();
            const run = await runMixz(["launch", "--nproc", "3", ...quick, script, "--mode", mode, "--rank", "1", "--pid-dir", pidDir]);
            assert.equal(run.code, code, run.stderr);
            assert.match(run.stderr, /Root cause \(first observed failure\):\n(.*\n)*? {2}rank {6}: 1 \(local_rank: 1\)/);
            assert.match(run.stderr, summary);
            assert.match(run.stderr, /Other failures:\n {2}<none>/);
            await assertNothingLeft(pidDir);
        });
    }
    it("SIGKILL of a rank from outside ends the job within 2 s (the launcher sees the exit at once)", async () => {
        const pidDir = newPidDir();
        const handle = startMixz(["launch", "--nproc", "2", ...quick, script, "--mode", "sleep", "--pid-dir", pidDir]);
        await handle.waitFor(/rank 1 started[\s\S]*rank 0 started|rank 0 started[\s\S]*rank 1 started/);
        const victim = Number(readFileSync(join(pidDir, "rank-1.pid"), "utf8"));
        const killedAt = Date.now();
        process.kill(victim, "SIGKILL");
        const run = await handle.done;
        const ms = Date.now() - killedAt;
        assert.equal(run.code, 137, run.stderr);
        assert.ok(ms < 2000, `launcher exited ${ms} ms after the kill`);
        await assertNothingLeft(pidDir);
    });
});

describe("the launcher is stopped", () => {
    it("Ctrl-C (SIGINT) stops every rank and exits 130", async () => {
        const pidDir = newPidDir();
        const handle = startMixz(["launch", "--nproc", "3", ...quick, script, "--mode", "sleep", "--pid-dir", pidDir]);
        await handle.waitFor(/(rank \d started[\s\S]*){3}/);
        handle.child.kill("SIGINT");
        const run = await handle.done;
        assert.equal(run.code, 130, run.stderr);
        assert.match(run.stderr, /SIGINT received: stopping 3 rank\(s\)/);
        assert.doesNotMatch(run.stderr, /FAILED/, "an interrupt is not a failure of a rank");
        await assertNothingLeft(pidDir);
    });
    it("SIGKILL of the launcher: the daemons notice (stdin EOF) and end their process groups", async () => {
        const pidDir = newPidDir();
        const handle = startMixz(["launch", "--nproc", "3", ...quick, script, "--mode", "sleep", "--pid-dir", pidDir]);
        await handle.waitFor(/(rank \d started[\s\S]*){3}/);
        handle.child.kill("SIGKILL");
        await handle.done;
        await assertNothingLeft(pidDir);
    });
});

describe("two jobs on one host", () => {
    it("a failing job never touches the other job's ranks", async () => {
        const survivorPids = newPidDir();
        const survivor = startMixz(["launch", "--nproc", "2", ...quick, script, "--mode", "sleep", "--pid-dir", survivorPids]);
        await survivor.waitFor(/(rank \d started[\s\S]*){2}/);
        const failing = await runMixz(["launch", "--nproc", "2", ...quick, script, "--mode", "exit3", "--rank", "0"]);
        assert.equal(failing.code, 3, failing.stderr);
        await new Promise((resolve) => setTimeout(resolve, 500));
        const pids = pidsIn(survivorPids);
        assert.deepEqual(pids.filter((pid) => !isAlive(pid)), [], "the other job's processes must survive");
        survivor.child.kill("SIGINT");
        assert.equal((await survivor.done).code, 130);
        await assertNothingLeft(survivorPids);
    });
});

describe("ranks that leave or fail together", () => {
    it("a rank that finishes early: the others' barrier fails at once, naming it", async () => {
        const pidDir = newPidDir();
        const run = await runMixz(["launch", "--nproc", "3", ...quick, script, "--mode", "leave", "--rank", "0", "--pid-dir", pidDir]);
        assert.equal(run.code, 1, run.stderr);
        assert.ok(run.ms < 20_000, `took ${run.ms} ms: the barrier must not wait for its 120 s timeout`);
        assert.match(run.stderr, /barrier "end" \(call 1\) can never complete: rank 0 \(host localhost\) has (finished|disconnected)/);
        await assertNothingLeft(pidDir);
    });
    it("two ranks failing at once are both in the summary", async () => {
        const pidDir = newPidDir();
        const run = await runMixz(["launch", "--nproc", "4", ...quick, script, "--mode", "twofail", "--rank", "1", "--pid-dir", pidDir]);
        // The root cause is whichever exit the launcher saw first (a SIGKILL within 250 ms of the
        // other failure is preferred): 3, or 137 for the killed rank.
        assert.ok(run.code === 3 || run.code === 137, `exit ${run.code}\n${run.stderr}`);
        const ranks = [...run.stderr.matchAll(/ {2}rank {6}: (\d) \(local_rank/g)].map((m) => Number(m[1])).sort();
        assert.deepEqual(ranks, [1, 2], run.stderr);
        assert.doesNotMatch(run.stderr, /Other failures:\n {2}<none>/);
        await assertNothingLeft(pidDir);
    });
});

describe("rendezvous", () => {
    it("a join timeout names the ranks and hosts that never joined, exit 1", async () => {
        const run = await runMixz(["launch", "--nproc", "3", ...quick, "--join-timeout", "0.01", script, "--mode", "sleep"]);
        assert.equal(run.code, 1, run.stderr);
        assert.match(run.stderr, /reason {4}: ranks that never joined within 0\.01 s: 0 \(localhost\), 1 \(localhost\), 2 \(localhost\)/);
    });
});

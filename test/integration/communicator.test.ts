// The communicator across real processes: ranks started by `mixz launch` build their world through
// the coordinator's store (runtime.store) and run collectives; a killed or stalled rank makes the
// others fail with an error naming it, not hang; no shared-memory segment outlives the job.
// Ranks started without the launcher (nothing then stops the survivors) show that every survivor
// gets the error.
import assert from "node:assert/strict";
import {spawn} from "node:child_process";
import {mkdtempSync, readdirSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";

import {fixture, repoRoot, runMixz} from "../helpers/mixzProcess.js";

const script = fixture("integration/fixtures/communicatorRank.ts");
const peerScript = fixture("integration/fixtures/communicatorPeer.ts");
const scratch = mkdtempSync(join(tmpdir(), "mixz-comm-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

function leftovers(jobId: string): string[] {
    return readdirSync("/dev/shm").filter((name) => name.startsWith(`mixz-${jobId}-`));
}

function jobIdOf(output: string): string {
    const match = /rank \d+ job (\S+) pid \d+/.exec(output);
    assert.ok(match, `no job id in the output:\n${output}`);
    return match[1]!;
}

describe("mixz launch: collectives between rank processes", () => {
    // Shared memory names its copy path: "shm (cma)" (single copy through the kernel) or
    // "shm (two-copy)" where process_vm_readv is refused between the rank processes.
    const shm = "shm \\((?:cma|two-copy)\\)";
    const cases: Array<[number, string, string]> = [
        [2, "auto", shm],
        [2, "shm", shm],
        [2, "gloo", "gloo"],
        [4, "auto", shm],
        [3, "gloo", "gloo"]
    ];
    for (const [n, transport, expected] of cases) {
        it(`${n} ranks, transport ${transport}: every collective and the groups`, async () => {
            const run = await runMixz(["launch", "--nproc", String(n), "--master-port", "0", script, "--mode", "check", "--transport", transport]);
            assert.equal(run.code, 0, run.stdout + run.stderr);
            for (let rank = 0; rank < n; rank++) {
                assert.match(run.stdout, new RegExp(`^\\[localhost:${rank}\\] rank ${rank} ok checks=\\d+ transport=${expected}$`, "m"));
            }
            assert.deepEqual(leftovers(jobIdOf(run.stdout)), []);
        });
    }

    it("two plan hosts on this machine (127.0.0.1, 127.0.0.2): shared memory inside, Gloo across", async () => {
        const hostfile = join(scratch, "hosts");
        writeFileSync(hostfile, "127.0.0.1 slots=2\n127.0.0.2 slots=2\n");
        const run = await runMixz(["launch", "--hostfile", hostfile, "--master-port", "0", script, "--mode", "check"]);
        assert.equal(run.code, 0, run.stdout + run.stderr);
        for (const [host, rank] of [["127.0.0.1", 0], ["127.0.0.1", 1], ["127.0.0.2", 2], ["127.0.0.2", 3]] as const) {
            assert.match(run.stdout, new RegExp(`^\\[${host.replaceAll(".", "\\.")}:${rank}\\] rank ${rank} ok checks=\\d+ transport=shm \\((?:cma|two-copy)\\)\\+gloo$`, "m"));
        }
        assert.deepEqual(leftovers(jobIdOf(run.stdout)), []);
    });
});

describe("mixz launch: a failing rank", () => {
    for (const transport of ["shm", "gloo"]) {
        it(`${transport}: a rank SIGKILLed while the others are in a collective ends the job at once, leaving no segment`, async () => {
            const run = await runMixz(["launch", "--nproc", "4", "--master-port", "0", script, "--mode", "kill", "--victim", "2",
                "--transport", transport, "--timeout-ms", "20000"], {timeoutMs: 60_000});
            const output = run.stdout + run.stderr;
            // The victim's death (137) or a survivor that failed on it first (3) ends the job.
            assert.ok(run.code === 137 || run.code === 3, `exit ${run.code}:\n${output}`);
            assert.ok(run.ms < 15_000, `took ${run.ms} ms`);
            assert.match(output, /rank 2 killing itself in round 3/);
            // The launcher stops the survivors as soon as it sees the death, so not every survivor
            // may get to print; those that do name the victim (directly, or through the peer that
            // gave up first).
            const errors = output.split("\n").filter((line) => / error MIXZ_ERR/.test(line));
            for (const line of errors) {
                assert.match(line, /error MIXZ_ERR_IO: allGather \(tag 3\): rank \d \(host localhost\): (process \d+ exited|connection closed|gave up on the collective: .*rank 2 \(host localhost\))/);
                assert.match(line, /rank 2 \(host localhost\)/);
            }
            assert.deepEqual(leftovers(jobIdOf(output)), []);
        });
    }

    it("a rank that never joins a collective: the others time out naming it", async () => {
        const run = await runMixz(["launch", "--nproc", "3", "--master-port", "0", script, "--mode", "stall", "--victim", "2",
            "--timeout-ms", "1500"], {timeoutMs: 60_000});
        assert.equal(run.code, 3, run.stdout + run.stderr);
        const errors = run.stdout.split("\n").filter((line) => / error MIXZ_ERR/.test(line));
        assert.ok(errors.length >= 1, run.stdout);
        for (const line of errors) {
            assert.match(line, /error MIXZ_ERR_IO: allGather \(tag 1\): timed out after 1\.5 s waiting for rank 2 \(host localhost\)$/);
        }
        for (const match of run.stdout.matchAll(/rank \d failed after (\d+) ms/g)) {
            const ms = Number(match[1]);
            assert.ok(ms >= 1_400 && ms < 4_000, `failed after ${ms} ms`);
        }
        assert.deepEqual(leftovers(jobIdOf(run.stdout)), []);
    });
});

interface PeerRun {
    readonly code: number | null;
    readonly signal: NodeJS.Signals | null;
    readonly stdout: string;
}

function runPeer(args: readonly string[]): Promise<PeerRun> {
    return new Promise((resolve) => {
        const child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", peerScript, ...args], {
            cwd: repoRoot,
            stdio: ["ignore", "pipe", "inherit"]
        });
        let stdout = "";
        child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
        const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
        child.once("close", (code, signal) => {
            clearTimeout(timer);
            resolve({code, signal, stdout});
        });
    });
}

describe("rank processes without the launcher: every survivor of a SIGKILLed peer gets the error", () => {
    for (const transport of ["shm", "gloo"]) {
        it(`${transport}: 3 ranks, rank 1 killed inside a collective`, async () => {
            const dir = mkdtempSync(join(scratch, "peers-"));
            const jobId = `peers-${transport}-${process.pid}`;
            const runs = await Promise.all([0, 1, 2].map((rank) => runPeer([String(rank), "3", dir, jobId, transport, "20000", "1"])));
            assert.equal(runs[1]!.signal, "SIGKILL", runs[1]!.stdout);
            for (const rank of [0, 2]) {
                const run = runs[rank]!;
                assert.equal(run.code, 3, run.stdout);
                const match = /error MIXZ_ERR_IO after (\d+) ms: allGather \(tag 3\): (.*)$/m.exec(run.stdout);
                assert.ok(match, run.stdout);
                // Named directly, or through the other survivor that gave up on it first.
                assert.match(match[2]!, /rank 1 \(host localhost\): (process \d+ exited|connection closed)/);
                // The victim slept 300 ms inside the round before dying; the error follows at once,
                // far within the 20 s timeout.
                assert.ok(Number(match[1]) < 5_000, `rank ${rank} failed after ${match[1]} ms`);
            }
            assert.deepEqual(leftovers(jobId), []);
        });
    }
});

describe("shared memory of a job that fails before its ranks connect", () => {
    it("the launcher sweeps /dev/shm/mixz-<jobId>-* on its way out", async () => {
        const run = await runMixz(["launch", "--nproc", "2", "--master-port", "0", "--grace-period", "1", fixture("integration/fixtures/communicatorEarlyExit.ts")]);
        assert.equal(run.code, 5, run.stderr);
        const jobId = /rank 0 job (\w+)/.exec(run.stdout)?.[1];
        assert.ok(jobId !== undefined, run.stdout);
        assert.deepEqual(readdirSync("/dev/shm").filter((name) => name.startsWith(`mixz-${jobId}-`)), []);
    });
});

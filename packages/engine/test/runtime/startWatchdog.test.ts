// The lifeline watchdog kills the process it runs in, so every case runs in a child process
// (test/fixtures/watchdogChild.ts), spawned detached so that it leads its own process group as a
// rank daemon does, and killed by process group afterwards whatever happens.
import assert from "node:assert/strict";
import {spawn} from "node:child_process";
import type {ChildProcessWithoutNullStreams} from "node:child_process";
import {readFileSync} from "node:fs";
import {fileURLToPath} from "node:url";
import {afterEach, describe, test} from "node:test";

import {MixzError} from "@mixz/protocol";

import {maxWatchdogLeaseMs, NativeErrorCodes, processGroup, startWatchdog} from "@mixz/engine";

const root = fileURLToPath(new URL("../../../../", import.meta.url));
const fixture = fileURLToPath(new URL("../fixtures/watchdogChild.ts", import.meta.url));

/** How long a child may take to start (tsx compiles; an ASan build loads slowly). */
const startTimeoutMs = 30_000;

interface Exit {
    readonly code: number | null;
    readonly signal: NodeJS.Signals | null;
    /** Date.now() when the exit was seen. */
    readonly at: number;
}

interface Child {
    readonly process: ChildProcessWithoutNullStreams;
    readonly pid: number;
    /** Resolves with the first stdout line starting with `prefix` (waiting for it if need be). */
    line(prefix: string, timeoutMs?: number): Promise<string>;
    readonly exited: Promise<Exit>;
    stdout(): string;
    stderr(): string;
}

const started: Child[] = [];
const strayPids: number[] = [];

interface ChildOptions {
    /** Flags for node before the fixture's, e.g. --expose-gc. */
    readonly nodeFlags?: readonly string[];
    /**
     * Runs the fixture as `sh -c 'cat | node …'`: its stdin is then a real pipe (Node gives its
     * children sockets) and it does not lead its process group (the shell does).
     */
    readonly viaShellPipe?: boolean;
}

function startChild(args: readonly string[], options: ChildOptions = {}): Child {
    const nodeArgs = [...(options.nodeFlags ?? []), "--conditions=source", "--import", "tsx", fixture, ...args];
    const child = options.viaShellPipe
        ? spawn("/bin/sh", ["-c", 'cat | "$0" "$@"', process.execPath, ...nodeArgs], {cwd: root, detached: true})
        : spawn(process.execPath, nodeArgs, {cwd: root, detached: true});
    child.stdin.on("error", () => {
        // EPIPE once the child is gone: expected in these tests.
    });
    let stdout = "";
    let stderr = "";
    const waiters: Array<() => void> = [];
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
        stdout += chunk;
        for (const wake of waiters.splice(0)) wake();
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
        stderr += chunk;
    });
    const exited = new Promise<Exit>((resolve) => {
        child.once("exit", (code, signal) => {
            resolve({code, signal, at: Date.now()});
            for (const wake of waiters.splice(0)) wake();
        });
    });
    let done = false;
    void exited.then(() => {
        done = true;
    });
    const handle: Child = {
        process: child,
        pid: child.pid ?? -1,
        exited,
        stdout: () => stdout,
        stderr: () => stderr,
        line(prefix, timeoutMs = startTimeoutMs) {
            return new Promise((resolve, reject) => {
                const output = (): string => `stdout:\n${stdout}\nstderr:\n${stderr}`;
                const timer = setTimeout(
                    () => reject(new Error(`no line "${prefix}" within ${timeoutMs} ms; ${output()}`)),
                    timeoutMs
                );
                const look = (): void => {
                    // Complete lines only: the last element is what follows the last newline.
                    const lines = stdout.split("\n").slice(0, -1);
                    const found = lines.find((candidate) => candidate.startsWith(prefix));
                    if (found !== undefined) {
                        clearTimeout(timer);
                        resolve(found);
                    } else if (done) {
                        clearTimeout(timer);
                        reject(new Error(`the child exited without saying "${prefix}"; ${output()}`));
                    } else {
                        waiters.push(look);
                    }
                };
                look();
            });
        }
    };
    assert.ok(handle.pid > 0, "spawn gave no pid");
    started.push(handle);
    return handle;
}

/** Whether a process is gone: no such process, or a zombie (killed, waiting for a reaper). */
function isGone(pid: number): boolean {
    try {
        process.kill(pid, 0);
    } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ESRCH") return true;
        throw error;
    }
    try {
        // "pid (comm) S ...": the state follows the last ')'.
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
    } catch {
        return true;
    }
}

async function waitUntilGone(pid: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
        if (isGone(pid)) return true;
        await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return isGone(pid);
}

/** A child that exited normally said nothing about the watchdog, nor a sanitizer (ASan runs). */
function assertQuietStderr(child: Child): void {
    assert.doesNotMatch(child.stderr(), /watchdog|runtime error|AddressSanitizer|LeakSanitizer/, child.stderr());
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
        promise,
        new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
        })
    ]).finally(() => clearTimeout(timer));
}

afterEach(() => {
    // Whatever a test left behind dies with its process group (never by name).
    for (const child of started.splice(0)) {
        try {
            process.kill(-child.pid, "SIGKILL");
        } catch {
            // already gone
        }
    }
    for (const pid of strayPids.splice(0)) {
        try {
            process.kill(pid, "SIGKILL");
        } catch {
            // already gone
        }
    }
});

describe("startWatchdog: stdin end of file", () => {
    test("closing stdin SIGKILLs a child whose JS thread is blocked, with one line naming the label", async () => {
        const child = startChild(["eof"]);
        const ready = await child.line("ready ");
        const group = JSON.parse(ready.slice("ready ".length)) as {pgid: number; leader: boolean};
        assert.deepEqual(group, {pgid: child.pid, leader: true});

        const closedAt = Date.now();
        child.process.stdin.end();
        const exit = await withTimeout(child.exited, 5000, "the child's death");
        assert.equal(exit.signal, "SIGKILL", `exit ${JSON.stringify(exit)}; stderr:\n${child.stderr()}`);
        assert.ok(exit.at - closedAt < 1000, `killed ${exit.at - closedAt} ms after stdin closed`);
        const lines = child.stderr().split("\n").filter((line) => line.includes("watchdog"));
        const expected =
            "mixz: rank 3: watchdog: stdin closed: the launcher or its SSH channel is gone; " +
            `killing process group ${child.pid}`;
        assert.deepEqual(lines, [expected]);
    });

    test("the grandchildren in its process group die with it", async () => {
        const child = startChild(["group"]);
        const ready = await child.line("ready ");
        const sleeper = Number(ready.slice("ready ".length));
        assert.ok(Number.isInteger(sleeper) && sleeper > 0, ready);
        strayPids.push(sleeper);
        assert.equal(isGone(sleeper), false, "the grandchild should be running");

        child.process.stdin.end();
        const exit = await withTimeout(child.exited, 5000, "the child's death");
        assert.equal(exit.signal, "SIGKILL", child.stderr());
        assert.equal(await waitUntilGone(sleeper, 1000), true, `grandchild ${sleeper} survived its process group`);
    });

    test("data on stdin does not fire it; dispose() stops it and the process then exits normally", async () => {
        const child = startChild(["data"]);
        await child.line("ready");
        // 1 MiB: far more than a pipe or socket buffer holds, so the write completes only if the
        // watchdog keeps reading (and discarding).
        await withTimeout(
            new Promise<void>((resolve, reject) => {
                child.process.stdin.write(Buffer.alloc(1 << 20, 0x61), (error) => (error ? reject(error) : resolve()));
            }),
            10_000,
            "writing 1 MiB to the child's stdin"
        );
        child.process.kill("SIGUSR1");
        assert.equal(await child.line("disposed"), "disposed true");
        child.process.stdin.end(); // after dispose(): must not kill
        const exit = await withTimeout(child.exited, 10_000, "the child's exit");
        assert.deepEqual([exit.code, exit.signal], [0, null], child.stderr());
        assert.match(child.stdout(), /^exiting$/m);
        assertQuietStderr(child);
    });

    test("a process that does not lead its group kills only itself (stdin a real pipe)", async () => {
        const child = startChild(["eof"], {viaShellPipe: true});
        const ready = await child.line("ready ");
        const group = JSON.parse(ready.slice("ready ".length)) as {pgid: number; leader: boolean};
        // The shell leads the group; node is its child.
        assert.deepEqual(group, {pgid: child.pid, leader: false});

        child.process.stdin.end(); // cat sees end of file, exits, and node's pipe reaches end of file
        const exit = await withTimeout(child.exited, 5000, "the shell's exit");
        // The shell itself was not killed: it reports its pipeline's status, 128 + SIGKILL.
        assert.deepEqual([exit.code, exit.signal], [137, null], child.stderr());
        assert.match(
            child.stderr(),
            new RegExp(
                "^mixz: rank 3: watchdog: stdin closed: the launcher or its SSH channel is gone; " +
                    `killing process \\d+ \\(it does not lead its process group ${child.pid}\\)$`,
                "m"
            )
        );
    });
});

describe("startWatchdog: lease", () => {
    test("a lease that runs out while the JS thread is stuck SIGKILLs the child", async () => {
        const child = startChild(["lease", "300"]);
        await child.line("ready");
        const readyAt = Date.now();
        const exit = await withTimeout(child.exited, 5000, "the child's death");
        assert.equal(exit.signal, "SIGKILL", child.stderr());
        const elapsed = exit.at - readyAt;
        assert.ok(elapsed >= 200 && elapsed < 1500, `killed ${elapsed} ms after starting a 300 ms lease`);
        assert.match(
            child.stderr(),
            new RegExp(
                "^mixz: rank 3: watchdog: no coordinator heartbeat acknowledgement for 300 ms: " +
                    "the coordinator is unreachable or this rank's JavaScript thread is stuck; " +
                    `killing process group ${child.pid}$`,
                "m"
            )
        );
    });

    test("renewals keep it alive, and the process then ends on its own with the watchdog running", async () => {
        const child = startChild(["renew", "1000", "natural"]);
        await child.line("ready");
        const readyAt = Date.now();
        const exit = await withTimeout(child.exited, 10_000, "the child's exit");
        assert.deepEqual([exit.code, exit.signal], [0, null], child.stderr());
        assert.ok(exit.at - readyAt >= 900, `exited after ${exit.at - readyAt} ms, before renewing for 1 s`);
        assert.match(child.stdout(), /^done$/m);
        assertQuietStderr(child);
    });

    test("process.exit() with a running watchdog exits normally", async () => {
        const child = startChild(["renew", "300", "exit"]);
        const exit = await withTimeout(child.exited, startTimeoutMs, "the child's exit");
        assert.deepEqual([exit.code, exit.signal], [0, null], child.stderr());
        assert.match(child.stdout(), /^done$/m);
        assertQuietStderr(child);
    });
});

describe("Watchdog: garbage collection", () => {
    test("the finalizer of an unreachable native Watchdog stops and joins its thread", async () => {
        const child = startChild(["gc"], {nodeFlags: ["--expose-gc"]});
        const line = await child.line("threads ");
        const threads = JSON.parse(line.slice("threads ".length)) as {before: number; during: number; after: number};
        assert.equal(threads.during, threads.before + 1, line);
        assert.equal(threads.after, threads.before, line);
        child.process.stdin.end(); // the collected watchdog must not fire
        const exit = await withTimeout(child.exited, 10_000, "the child's exit");
        assert.deepEqual([exit.code, exit.signal], [0, null], child.stderr());
        assert.match(child.stdout(), /^exiting$/m);
        assertQuietStderr(child);
    });
});

describe("startWatchdog: invalid options", () => {
    test("are MIXZ_ERR_INVALID_ARGUMENT from the TS validation and from the addon itself", async () => {
        const child = startChild(["invalid"]);
        const line = await child.line("[");
        const outcomes = JSON.parse(line) as Array<{
            name: string;
            threw: boolean;
            code?: string;
            message?: string;
            mixzError?: boolean;
        }>;
        assert.equal(outcomes.length, 21);
        for (const outcome of outcomes) {
            assert.equal(outcome.threw, true, `${outcome.name}: did not throw`);
            assert.equal(outcome.code, NativeErrorCodes.invalidArgument, `${outcome.name}: ${outcome.message}`);
            if (outcome.name.startsWith("ts: ")) {
                assert.equal(outcome.mixzError, true, outcome.name);
                assert.match(outcome.message ?? "", /^startWatchdog: /, outcome.name);
            } else {
                // Thrown by the addon, converted in native/addon/convertError.cc.
                assert.match(outcome.message ?? "", /^\[(addon|src\/runtime)\/\w+\.cc:\d+\] /, outcome.name);
            }
        }
        const exit = await withTimeout(child.exited, 10_000, "the child's exit");
        assert.deepEqual([exit.code, exit.signal], [0, null], child.stderr());
        assertQuietStderr(child);
    });

    test("are rejected here before anything starts (this process survives to tell)", () => {
        // Only options that cannot start a watchdog: the test runner must not get one.
        assert.throws(
            () => startWatchdog({fd: 0, leaseMs: -1, label: "test"}),
            (error: unknown) => error instanceof MixzError && error.code === NativeErrorCodes.invalidArgument
        );
        assert.throws(
            () => startWatchdog({fd: 0, leaseMs: maxWatchdogLeaseMs + 1, label: "test"}),
            (error: unknown) => error instanceof MixzError && /leaseMs must be an integer/.test(error.message)
        );
    });

    test("processGroup() reports this process's group", () => {
        const group = processGroup();
        // /proc/self/stat: "pid (comm) state ppid pgrp ...".
        const stat = readFileSync("/proc/self/stat", "utf8");
        const pgrp = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
        assert.deepEqual(group, {pgid: pgrp, leader: pgrp === process.pid});
    });
});

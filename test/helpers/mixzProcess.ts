// Runs bin/mixz as a real process for integration, fault and SSH tests.
import {spawn, type ChildProcess} from "node:child_process";
import {readFileSync} from "node:fs";
import {join} from "node:path";
import {fileURLToPath} from "node:url";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
export const mixzBin = join(repoRoot, "bin", "mixz");
export const fixture = (path: string): string => join(repoRoot, "test", path);

export interface MixzRun {
    readonly code: number | null;
    readonly signal: NodeJS.Signals | null;
    readonly stdout: string;
    readonly stderr: string;
    readonly ms: number;
}

export interface MixzOptions {
    readonly cwd?: string;
    readonly env?: NodeJS.ProcessEnv;
    readonly timeoutMs?: number;
}

/** A started launcher: its output so far, and its end. */
export interface MixzHandle {
    readonly child: ChildProcess;
    readonly done: Promise<MixzRun>;
    output(): string;
    /** Resolves once the combined output matches, or rejects after timeoutMs. */
    waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
}

export function startMixz(args: readonly string[], options: MixzOptions = {}): MixzHandle {
    const started = Date.now();
    const child = spawn(mixzBin, args, {
        cwd: options.cwd ?? repoRoot,
        env: {...process.env, MIXZ_LOG_LEVEL: "warn", ...options.env},
        stdio: ["ignore", "pipe", "pipe"]
    });
    let stdout = "";
    let stderr = "";
    const watchers = new Set<() => void>();
    child.stdout!.on("data", (chunk: Buffer) => {
        stdout += chunk.toString();
        for (const watch of [...watchers]) watch();
    });
    child.stderr!.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
        for (const watch of [...watchers]) watch();
    });
    const timeoutMs = options.timeoutMs ?? 60_000;
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    const done = new Promise<MixzRun>((resolve) => {
        child.once("close", (code, signal) => {
            clearTimeout(timer);
            resolve({code, signal, stdout, stderr, ms: Date.now() - started});
        });
    });
    return {
        child,
        done,
        output: () => stdout + stderr,
        waitFor: (pattern, waitMs = 30_000) => new Promise<void>((resolve, reject) => {
            const check = (): void => {
                if (!pattern.test(stdout + stderr)) return;
                watchers.delete(check);
                clearTimeout(giveUp);
                resolve();
            };
            const giveUp = setTimeout(() => {
                watchers.delete(check);
                reject(new Error(`no ${pattern} in output within ${waitMs} ms:\n${stdout}${stderr}`));
            }, waitMs);
            watchers.add(check);
            check();
        })
    };
}

export function runMixz(args: readonly string[], options: MixzOptions = {}): Promise<MixzRun> {
    return startMixz(args, options).done;
}

/** True while `pid` exists and is not a zombie (PID 1 may reap orphans late). */
export function isAlive(pid: number): boolean {
    try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
    } catch {
        return false;
    }
}

/** Waits until none of `pids` is alive; returns those still alive after `timeoutMs`. */
export async function waitGone(pids: readonly number[], timeoutMs = 5000): Promise<number[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const alive = pids.filter(isAlive);
        if (alive.length === 0 || Date.now() > deadline) return alive;
        await new Promise((resolve) => setTimeout(resolve, 50));
    }
}

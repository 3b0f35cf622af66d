import {spawn} from "node:child_process";
import type {Readable} from "node:stream";

/** How a rank process ended: an exit code, or the signal that killed it. */
export interface RankExit {
    readonly code: number | null;
    readonly signal: string | null;
}

/**
 * A started rank daemon, local or remote. The launcher owns it by pid/process group (local) or
 * by its SSH channel (remote) — never by name, so two jobs on one host never touch each other.
 */
export interface RankProcess {
    /** Local pid (the daemon leads its own process group); null for remote ranks until they join. */
    readonly pid: number | null;
    readonly stdout: Readable;
    readonly stderr: Readable;
    readonly exit: Promise<RankExit>;
    /** Asks the rank to stop (SIGTERM to its group; remote: its stdin closes and it ends itself). */
    terminate(): void;
    /** Stops it now (SIGKILL to its group; remote: the channel closes). */
    kill(): void;
    /**
     * After the daemon has exited: SIGKILL whatever is left of its process group (children the
     * script started). The group id is the daemon's pid, which the kernel does not reuse while
     * any member of the group is alive.
     */
    reapGroup(pgid: number | null): Promise<void>;
}

/**
 * A rank on this machine: the daemon runs as a child in its own session and process group
 * (detached), so signals to the group reach the script's children too, and a Ctrl-C on the
 * terminal reaches only the launcher, which then stops the ranks in order.
 */
export function startLocalRank(daemonArgv: readonly string[], descriptorLine: string, cwd: string, env: NodeJS.ProcessEnv): RankProcess {
    const child = spawn(daemonArgv[0]!, daemonArgv.slice(1), {cwd, env, detached: true, stdio: ["pipe", "pipe", "pipe"]});
    const exit = new Promise<RankExit>((resolve) => {
        child.once("exit", (code, signal) => resolve({code, signal}));
        // A spawn failure (ENOENT…) never produces "exit"; report it as exit code 127 like a shell.
        child.once("error", () => resolve({code: child.exitCode ?? 127, signal: null}));
    });
    let exited = false;
    void exit.then(() => {
        exited = true;
    });
    // The descriptor, then stdin stays open: its end-of-file tells the daemon the launcher is gone.
    child.stdin.on("error", () => undefined);
    child.stdin.write(`${descriptorLine}\n`);
    const signalGroup = (signal: NodeJS.Signals): void => {
        if (exited || child.pid === undefined) return;
        try {
            process.kill(-child.pid, signal);
        } catch {
            // Already gone.
        }
    };
    return {
        pid: child.pid ?? null,
        stdout: child.stdout,
        stderr: child.stderr,
        exit,
        terminate: () => signalGroup("SIGTERM"),
        kill: () => {
            signalGroup("SIGKILL");
            child.stdin.destroy();
        },
        reapGroup: async () => {
            child.stdin.destroy();
            if (child.pid === undefined) return;
            try {
                process.kill(-child.pid, "SIGKILL");
            } catch {
                // Nothing left of the group.
            }
        }
    };
}

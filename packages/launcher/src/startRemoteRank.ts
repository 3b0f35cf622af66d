import {ErrorCodes, MixzError} from "@mixz/protocol";
import type {RankProcess} from "./RankProcess.js";
import type {RemoteProcess} from "./ssh/api.js";
import type {SshConnection} from "./ssh/SshConnection.js";

/** Opening an exec channel is one round trip; a stalled open must not stall the launch. */
const kOpenTimeoutMs = 30_000;

/**
 * A rank on another host, in one exec channel of the host's SSH connection. SSH can neither
 * signal the remote process nor tell its pid (ssh2 #382, #776), so stopping means closing the
 * channel: the daemon's stdin ends and its native watchdog kills its process group.
 */
export async function startRemoteRank(connection: SshConnection, daemonArgv: readonly string[], descriptorLine: string, cwd: string): Promise<RankProcess> {
    const opening = connection.exec(daemonArgv, {cwd, env: {}, stdin: `${descriptorLine}\n`});
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new MixzError(ErrorCodes.ssh,
            `opening an SSH channel on host ${connection.target.host} took longer than ${kOpenTimeoutMs / 1000} s (is MaxSessions of its sshd exhausted?)`,
            {category: "infra", context: {host: connection.target.host}})), kOpenTimeoutMs);
    });
    let remote: RemoteProcess;
    try {
        remote = await Promise.race([opening, deadline]);
    } catch (error) {
        // A channel that opens after the deadline is closed at once: nothing of the job may linger.
        void opening.then((late) => late.close(), () => undefined);
        throw error;
    } finally {
        clearTimeout(timer);
    }
    return {
        pid: null,
        stdout: remote.stdout,
        stderr: remote.stderr,
        exit: remote.exit,
        terminate: () => remote.closeStdin(),
        kill: () => remote.close(),
        reapGroup: async (pgid) => {
            remote.close();
            if (pgid === null) return;
            // The daemon reported its pid (= its process group) when it joined; kill what is left of
            // the group on that host, by id, never by name. `kill -9 -PGID`: dash rejects `--` and `-s KILL -PGID`.
            try {
                const reaper = await connection.exec(["sh", "-c", `kill -9 -${pgid} 2>/dev/null; true`], {cwd: "/", env: {}});
                reaper.stdout.resume();
                reaper.stderr.resume();
                await reaper.exit;
            } catch {
                // The connection is gone; the host's watchdogs are the last line.
            }
        }
    };
}

import type {RankProcess} from "./RankProcess.js";
import type {SshConnection} from "./ssh/SshConnection.js";

/**
 * A rank on another host, in one exec channel of the host's SSH connection. SSH can neither
 * signal the remote process nor tell its pid (ssh2 #382, #776), so stopping means closing the
 * channel: the daemon's stdin ends and its native watchdog kills its process group.
 */
export async function startRemoteRank(connection: SshConnection, daemonArgv: readonly string[], descriptorLine: string, cwd: string): Promise<RankProcess> {
    const remote = await connection.exec(daemonArgv, {cwd, env: {}, stdin: `${descriptorLine}\n`});
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

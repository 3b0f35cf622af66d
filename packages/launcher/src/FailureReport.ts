import {constants} from "node:os";

/** Why a rank is counted as failed. */
export type FailureKind =
    /** The process exited non-zero or died by a signal. */
    | "exit"
    /** No heartbeat within interval × misses: stuck or unreachable. */
    | "heartbeat"
    /** Its coordinator connection closed while the process did not exit. */
    | "disconnected"
    /** It never joined within the join timeout. */
    | "join_timeout";

export interface RankFailure {
    readonly kind: FailureKind;
    readonly rank: number;
    readonly host: string;
    readonly localRank: number;
    readonly pid: number | null;
    readonly time: Date;
    readonly code: number | null;
    readonly signal: string | null;
    /** The error the script threw, when the daemon reported one. */
    readonly error?: string;
    /** What the launcher observed, for kinds other than "exit". */
    readonly detail?: string;
    readonly stderrTail: readonly string[];
}

/**
 * The launcher's exit code for a failed job (DESIGN.md §4): the root cause's exit code; 128+n
 * for signal n; 1 when the job was lost rather than failed (heartbeat, join timeout, start).
 */
export function exitCodeOf(failure: RankFailure): number {
    if (failure.kind !== "exit") return 1;
    if (failure.signal !== null) {
        const number = (constants.signals as Record<string, number>)[failure.signal];
        return number === undefined ? 1 : 128 + number;
    }
    if (failure.code !== null && failure.code > 0 && failure.code < 256) return failure.code;
    return 1;
}

function describeExit(failure: RankFailure): string {
    const pid = failure.pid === null ? "" : ` (pid: ${failure.pid})`;
    if (failure.kind !== "exit") return `${failure.detail ?? failure.kind}${pid}`;
    if (failure.signal !== null) {
        const number = (constants.signals as Record<string, number>)[failure.signal];
        return `killed by signal ${number ?? "?"} (${failure.signal})${pid}`;
    }
    return `${failure.code ?? "unknown"}${pid}`;
}

function timestamp(time: Date): string {
    const pad = (n: number): string => String(n).padStart(2, "0");
    return `${time.getFullYear()}-${pad(time.getMonth() + 1)}-${pad(time.getDate())}_${pad(time.getHours())}:${pad(time.getMinutes())}:${pad(time.getSeconds())}`;
}

function block(failure: RankFailure): string[] {
    const lines = [
        `  time      : ${timestamp(failure.time)}`,
        `  host      : ${failure.host}`,
        `  rank      : ${failure.rank} (local_rank: ${failure.localRank})`,
        `  ${failure.kind === "exit" ? "exitcode  " : "reason    "}: ${describeExit(failure)}`
    ];
    if (failure.error !== undefined) lines.push(`  error     : ${failure.error.split("\n")[0]}`);
    if (failure.stderrTail.length > 0) {
        lines.push(`  stderr (last ${failure.stderrTail.length} lines):`);
        for (const line of failure.stderrTail) lines.push(`    | ${line}`);
    }
    return lines;
}

/** How close after another failure a signal death still counts as the likelier root cause. */
export const kSignalPreferenceMs = 250;

/**
 * The root cause: the earliest failure — except that a rank killed by a signal within
 * kSignalPreferenceMs after an earlier failure is preferred to it. Peers of a killed rank notice
 * its death inside their collectives within milliseconds and exit with an error, sometimes before
 * the launcher has seen the killed process's own exit status.
 */
export function rootCauseOf(failures: readonly RankFailure[]): RankFailure | undefined {
    const sorted = [...failures].sort((a, b) => a.time.getTime() - b.time.getTime());
    const first = sorted[0];
    if (first === undefined || first.signal !== null) return first;
    return sorted.find((f) => f.signal !== null && f.time.getTime() - first.time.getTime() <= kSignalPreferenceMs) ?? first;
}

/**
 * The failure summary printed when a job fails, in the shape torchrun users know: the root
 * cause (rootCauseOf) first, then every other rank that failed on its own (before the job was
 * stopped, or at the same moment), then how many ranks the launcher stopped.
 */
export function formatFailureReport(script: string, jobId: string, failures: readonly RankFailure[], stopped: number): string {
    const root = rootCauseOf(failures);
    const others = [...failures].sort((a, b) => a.time.getTime() - b.time.getTime()).filter((f) => f !== root);
    const body: string[] = [`mixz launch FAILED: ${script} (job ${jobId})`];
    const rule = "-".repeat(60);
    body.push(rule, "Root cause (first observed failure):");
    if (root !== undefined) body.push(...block(root));
    body.push(rule, "Other failures:");
    if (others.length === 0) body.push("  <none>");
    for (const failure of others) body.push(...block(failure), "");
    body.push(rule, `Stopped by the launcher: ${stopped} rank(s) still running at the time`);
    const equals = "=".repeat(60);
    return [equals, ...body, equals].join("\n") + "\n";
}

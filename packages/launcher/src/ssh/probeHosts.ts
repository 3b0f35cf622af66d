import {ErrorCodes, MixzError} from "@mixz/protocol";
import type {SshConnectOptions, SshTarget} from "./api.js";
import {SshConnection} from "./SshConnection.js";

/**
 * Opens one connection per target, all at once, before any rank starts (DeepSpeed probes only the
 * first host; Horovod probes all in parallel: launchers.md §1c, complaint 5). Either every
 * connection opens, and the map (plan host → connection, in target order) is returned, or the
 * connections that did open are closed and ONE MixzError lists every failed host, one line each,
 * with its cause. Failures that are not MixzErrors (a bug) are reported the same way.
 *
 * Targets must have distinct `host` names (a plan never repeats a host).
 */
export async function probeHosts(targets: readonly SshTarget[], options: SshConnectOptions): Promise<Map<string, SshConnection>> {
    const seen = new Set<string>();
    for (const target of targets) {
        if (seen.has(target.host)) throw new RangeError(`probeHosts: host ${target.host} appears twice`);
        seen.add(target.host);
    }
    const outcomes = await Promise.allSettled(targets.map((target) => SshConnection.open(target, options)));
    const connections = new Map<string, SshConnection>();
    const failures: Array<{host: string; error: unknown}> = [];
    outcomes.forEach((outcome, index) => {
        const host = targets[index]!.host;
        if (outcome.status === "fulfilled") connections.set(host, outcome.value);
        else failures.push({host, error: outcome.reason});
    });
    if (failures.length === 0) return connections;

    // Close what opened; a server that does not answer the disconnect must not hold up the report.
    for (const connection of connections.values()) connection.close();
    await Promise.race([
        Promise.all([...connections.values()].map((connection) => connection.closed)),
        new Promise((resolve) => setTimeout(resolve, 2_000).unref())
    ]);
    const lines = failures.map(({host, error}) => (error instanceof MixzError ? error.message : `ssh ${host}: ${error instanceof Error ? error.message : String(error)}`));
    const heading = failures.length === 1 && targets.length === 1
        ? "cannot reach the host over SSH:"
        : `cannot reach ${failures.length} of ${targets.length} hosts over SSH:`;
    throw new MixzError(ErrorCodes.ssh, [heading, ...lines.map((line) => `  ${line}`)].join("\n"), {
        category: "infra",
        context: {
            hosts: failures.map((failure) => failure.host),
            cause: "probe",
            failures: failures.map(({host, error}) => ({
                host,
                cause: error instanceof MixzError ? error.context["cause"] : "error",
                message: error instanceof Error ? error.message : String(error)
            }))
        },
        cause: new AggregateError(failures.map((failure) => failure.error), "ssh probe failures")
    });
}

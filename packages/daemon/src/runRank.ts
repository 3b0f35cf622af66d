import Module, {register} from "node:module";
import {isAbsolute} from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";
import {CoordinatorClient} from "@mixz/coordinator";
import type {ResolvedConfig} from "@mixz/config";
import {processGroup, startWatchdog, type ProcessWatchdog} from "@mixz/engine";
import {createLogger, type Logger} from "@mixz/log";
import type {RankDescriptor} from "@mixz/protocol";
import {register as registerTsxCjs} from "tsx/cjs/api";
import {register as registerTsx} from "tsx/esm/api";
import {installRankContext, type RankContext} from "mixz";
import {hostFacts, rankEnvironment} from "./rankEnvironment.js";

/** How long a daemon keeps trying to reach the coordinator before giving up. */
const kConnectTimeoutMs = 30_000;
/** Default timeout of store waits and barriers when the script gives none. */
const kDefaultStoreTimeoutMs = 300_000;

/**
 * One rank, from descriptor to exit: environment, lifelines, join, then the user's script
 * in-process. Returns only by exiting the process.
 *
 * Lifelines (any one ends the rank; DESIGN.md §1):
 * - the coordinator's abort → SIGTERM to this rank's process group (the script's children too);
 * - the coordinator connection lost → SIGKILL to the group;
 * - stdin end-of-file (launcher or SSH channel gone) or no heartbeat acknowledgement within
 *   interval × misses → the native watchdog thread SIGKILLs the group, even when this JS thread
 *   is stuck in the user's code.
 */
export async function runRank(descriptor: RankDescriptor, ownVersion: string): Promise<never> {
    const label = `rank ${descriptor.rank}`;
    const logger = createLogger({
        component: "daemon",
        format: descriptor.logFormat,
        level: "warn",
        bindings: {host: descriptor.host, rank: descriptor.rank}
    });
    if (descriptor.mixzVersion !== ownVersion) {
        return fatal(label, `mixz ${ownVersion} on host ${descriptor.host} differs from the launcher's ${descriptor.mixzVersion}; ` +
            "every host must run the same mixz installation (same path, shared filesystem)");
    }
    Object.assign(process.env, rankEnvironment(descriptor, process.env, hostFacts()));
    try {
        process.chdir(descriptor.cwd);
    } catch (error) {
        return fatal(label, `cannot enter the launcher's working directory ${descriptor.cwd} on host ${descriptor.host}: ${(error as Error).message}`);
    }

    // Until the world is ready the lease covers the whole join timeout; afterwards it is the
    // heartbeat deadline (plus one interval of slack for a slow acknowledgement).
    const heartbeatLeaseMs = descriptor.heartbeatIntervalMs * (descriptor.heartbeatMisses + 1);
    const watchdog: ProcessWatchdog = startWatchdog({fd: 0, leaseMs: descriptor.joinTimeoutMs + kConnectTimeoutMs, label});
    const group = processGroup();
    const endGroup = (signal: "SIGTERM" | "SIGKILL", why: string): never => {
        process.stderr.write(`mixz: ${label}: ${why}\n`);
        if (group.leader) process.kill(-group.pgid, signal);
        process.exit(signal === "SIGTERM" ? 143 : 137);
    };

    // The loaders start their thread now, while this rank waits for the others to join, not after.
    const scriptUrl = pathToFileURL(isAbsolute(descriptor.script) ? descriptor.script : `${descriptor.cwd}/${descriptor.script}`).href;
    registerScriptLoader(scriptUrl);

    let client: CoordinatorClient;
    try {
        client = await CoordinatorClient.connect({
            url: descriptor.coordinatorUrl,
            token: descriptor.token,
            jobId: descriptor.jobId,
            rank: descriptor.rank,
            host: descriptor.host,
            pid: process.pid,
            mixzVersion: ownVersion,
            connectTimeoutMs: kConnectTimeoutMs,
            joinTimeoutMs: descriptor.joinTimeoutMs,
            heartbeatIntervalMs: descriptor.heartbeatIntervalMs,
            logger,
            onAbort: (code, reason) => endGroup("SIGTERM", `aborted by the launcher (${code}): ${reason}`),
            onLost: (error) => endGroup("SIGKILL", `lost the coordinator: ${error.message}`),
            onHeartbeatAck: () => watchdog.renew(heartbeatLeaseMs)
        });
    } catch (error) {
        watchdog.dispose();
        return fatal(label, error instanceof Error ? error.message : String(error));
    }
    watchdog.renew(heartbeatLeaseMs);

    installRankContext(rankContext(descriptor, client, logger));
    process.argv = [process.execPath, descriptor.script, ...descriptor.args];

    let failed = false;
    const fail = (error: unknown): void => {
        if (failed) return;
        failed = true;
        const message = error instanceof Error ? error.message : String(error);
        const stack = error instanceof Error ? error.stack : undefined;
        process.stderr.write(`${stack ?? message}\n`);
        client.reportFailure(message, stack);
        void client.bye(1).finally(() => process.exit(1));
    };
    process.on("uncaughtException", fail);

    try {
        await import(scriptUrl);
    } catch (error) {
        fail(error);
        return new Promise<never>(() => undefined);
    }
    // The module has run; work it scheduled may still be pending. Let the process end when that
    // work is done, as a plain `node script` would, and say goodbye just before.
    client.unref();
    let leaving = false;
    process.on("beforeExit", () => {
        if (leaving || failed) return;
        leaving = true;
        const code = typeof process.exitCode === "number" ? process.exitCode : 0;
        void client.bye(code).finally(() => {
            watchdog.dispose();
            process.exit(code);
        });
    });
    return new Promise<never>(() => undefined);
}

function rankContext(descriptor: RankDescriptor, client: CoordinatorClient, logger: Logger): RankContext {
    const encoder = new TextEncoder();
    return {
        rank: descriptor.rank,
        worldSize: descriptor.worldSize,
        localRank: descriptor.localRank,
        localWorldSize: descriptor.localWorldSize,
        crossRank: descriptor.crossRank,
        crossSize: descriptor.crossSize,
        host: descriptor.host,
        jobId: descriptor.jobId,
        config: descriptor.config as ResolvedConfig | null,
        logger: logger.child({component: "rank"}, {level: "info"}),
        store: {
            set: (key, value) => client.kvSet(key, typeof value === "string" ? encoder.encode(value) : value),
            get: (key) => client.kvGet(key),
            wait: (keys, timeoutMs = kDefaultStoreTimeoutMs) => client.kvWait(keys, timeoutMs),
            barrier: (name = "default", timeoutMs = kDefaultStoreTimeoutMs) => client.barrier(name, timeoutMs)
        },
        reportMetrics: (metrics) => client.sendMetrics(metrics)
    };
}

/**
 * TypeScript through tsx for ES modules and CommonJS alike (a `.ts` file outside a `"type":
 * "module"` package is CommonJS to Node), and `"mixz"` pinned to this installation for `import`
 * and `require` both.
 */
function registerScriptLoader(scriptUrl: string): void {
    const mixzEntry = import.meta.resolve("mixz");
    register(new URL("./mixzResolveHooks.js", import.meta.url), {data: {mixzEntry, scriptUrl}});
    // tsx registered last runs first; it hands bare specifiers such as "mixz" on to ours.
    registerTsx();
    registerTsxCjs();
    const mixzPath = fileURLToPath(mixzEntry);
    const moduleInternals = Module as unknown as {_resolveFilename: (request: string, ...rest: unknown[]) => string};
    const resolveFilename = moduleInternals._resolveFilename;
    moduleInternals._resolveFilename = function (request: string, ...rest: unknown[]): string {
        return request === "mixz" ? mixzPath : resolveFilename.call(this, request, ...rest);
    };
}

function fatal(label: string, message: string): never {
    process.stderr.write(`mixz: ${label}: ${message}\n`);
    process.exit(1);
}


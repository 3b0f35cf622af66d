import {createLogger} from "@mixz/log";
import {ErrorCodes, MixzError} from "@mixz/protocol";
import {installedRankContext, type RankContext, type RankStore} from "./RankContext.js";

const kDefaultWaitMs = 300_000;

/**
 * This rank's context. Under `mixz launch` it is the daemon's; a script started directly with
 * `node`/`tsx` runs as rank 0 of a world of 1 with an in-process store, so the same script works
 * in both (torchrun scripts behave the same way without the launcher).
 */
export const runtime: RankContext = new Proxy({} as RankContext, {
    get(_target, property) {
        return Reflect.get(installedRankContext() ?? standaloneContext(), property);
    }
});

let standalone: RankContext | undefined;

function standaloneContext(): RankContext {
    standalone ??= {
        rank: 0,
        worldSize: 1,
        localRank: 0,
        localWorldSize: 1,
        crossRank: 0,
        crossSize: 1,
        host: "localhost",
        jobId: "standalone",
        config: null,
        logger: createLogger({component: "rank", bindings: {host: "localhost", rank: 0}}),
        store: createLocalStore(),
        reportMetrics: () => undefined
    };
    return standalone;
}

/** A world of one: sets are visible at once, barriers pass, waits time out like the real store. */
function createLocalStore(): RankStore {
    const values = new Map<string, Uint8Array>();
    const waiters = new Set<() => void>();
    return {
        async set(key, value) {
            values.set(key, typeof value === "string" ? new TextEncoder().encode(value) : value);
            for (const wake of [...waiters]) wake();
        },
        async get(key) {
            return values.get(key) ?? null;
        },
        wait(keys, timeoutMs = kDefaultWaitMs) {
            return new Promise((resolve, reject) => {
                const check = (): boolean => {
                    if (!keys.every((key) => values.has(key))) return false;
                    waiters.delete(wakeUp);
                    clearTimeout(timer);
                    resolve(keys.map((key) => values.get(key)!));
                    return true;
                };
                const wakeUp = (): void => {
                    check();
                };
                const timer = setTimeout(() => {
                    waiters.delete(wakeUp);
                    const missing = keys.filter((key) => !values.has(key));
                    reject(new MixzError(ErrorCodes.storeTimeout, `keys not set within ${timeoutMs} ms: ${missing.join(", ")}`, {category: "worker"}));
                }, timeoutMs);
                waiters.add(wakeUp);
                check();
            });
        },
        async barrier() {
            // One rank: everyone has arrived.
        }
    };
}

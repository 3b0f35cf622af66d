import type {ResolvedConfig} from "@mixz/config";
import type {Logger} from "@mixz/log";
import type {MetricsMessage} from "@mixz/protocol";

/**
 * The job's key-value store and barrier, served by the coordinator. Keys are strings; values are
 * bytes (strings are stored as UTF-8). Every wait has a timeout: nothing here blocks forever.
 */
export interface RankStore {
    set(key: string, value: Uint8Array | string): Promise<void>;
    /** The value, or null when the key is not set (no waiting). */
    get(key: string): Promise<Uint8Array | null>;
    /** Waits until every key is set and returns their values in order. */
    wait(keys: readonly string[], timeoutMs?: number): Promise<Uint8Array[]>;
    /** Waits until every rank of the world has reached the barrier of this name. */
    barrier(name?: string, timeoutMs?: number): Promise<void>;
}

/** Who and where this rank is, as a training script sees it through `runtime`. */
export interface RankContext {
    readonly rank: number;
    readonly worldSize: number;
    readonly localRank: number;
    readonly localWorldSize: number;
    /** Index of this rank's node and the number of nodes. */
    readonly crossRank: number;
    readonly crossSize: number;
    /** The plan's name of this rank's host. */
    readonly host: string;
    readonly jobId: string;
    /** The validated DeepSpeed config with every default filled in; null when launched without --config. */
    readonly config: ResolvedConfig | null;
    /** Logger bound to {host, rank}. */
    readonly logger: Logger;
    readonly store: RankStore;
    /** Sends one step's metrics to the launcher's progress line. */
    reportMetrics(metrics: Omit<MetricsMessage, "kind">): void;
}

/**
 * Where a rank daemon publishes the context before it imports the user's script. A registered
 * global symbol rather than module state: the script's `import "mixz"` and the daemon's import
 * must see the same context even if a loader ever gave them different module instances.
 */
export const kRankContextSymbol: unique symbol = Symbol.for("mixz.rankContext") as never;

/** @internal Called by the rank daemon only. */
export function installRankContext(context: RankContext): void {
    (globalThis as Record<symbol, unknown>)[kRankContextSymbol] = context;
}

export function installedRankContext(): RankContext | undefined {
    return (globalThis as Record<symbol, unknown>)[kRankContextSymbol] as RankContext | undefined;
}

/**
 * The coordinator's key-value store: the rendezvous medium of the engine (each rank publishes its
 * transport address under a key, then waits for everyone else's).
 *
 * Vocabulary: a *waiter* is one pending kv_wait; its *missing* keys are those not yet set. Every
 * waiter has a timeout and settles exactly once: with the values (in the order asked), with a
 * timeout error naming the keys still missing, or with the error given to failAll().
 */
import {ErrorCodes} from "@mixz/protocol";

/** How a wait ends; becomes a `reply` frame. */
export type WaitOutcome =
    | {readonly ok: true; readonly values: Uint8Array[]}
    | {readonly ok: false; readonly code: string; readonly message: string};

interface Waiter {
    readonly keys: readonly string[];
    readonly missing: Set<string>;
    readonly timeoutMs: number;
    readonly done: (outcome: WaitOutcome) => void;
    timer: NodeJS.Timeout | undefined;
}

/** Lists at most `max` names, then says how many more there are. */
export function listSome(names: readonly string[], max = 16): string {
    const shown = names.slice(0, max).join(", ");
    return names.length > max ? `${shown} and ${names.length - max} more` : shown;
}

export class KvStore {
    private readonly values = new Map<string, Uint8Array>();
    private readonly waitersByKey = new Map<string, Set<Waiter>>();
    private readonly waiters = new Set<Waiter>();

    get(key: string): Uint8Array | undefined {
        return this.values.get(key);
    }

    /** Stores (or overwrites) `key` and settles every waiter that no longer misses anything. */
    set(key: string, value: Uint8Array): void {
        this.values.set(key, value);
        const waiting = this.waitersByKey.get(key);
        if (waiting === undefined) return;
        this.waitersByKey.delete(key);
        for (const waiter of waiting) {
            waiter.missing.delete(key);
            if (waiter.missing.size === 0) this.settle(waiter, {ok: true, values: waiter.keys.map((k) => this.values.get(k)!)});
        }
    }

    /**
     * Waits until every key is set. `done` may run before wait() returns (all keys already set).
     * Returns a function that cancels the wait without calling `done` (the waiting rank is gone).
     */
    wait(keys: readonly string[], timeoutMs: number, done: (outcome: WaitOutcome) => void): () => void {
        const missing = new Set(keys.filter((key) => !this.values.has(key)));
        if (missing.size === 0) {
            done({ok: true, values: keys.map((k) => this.values.get(k)!)});
            return () => {};
        }
        const waiter: Waiter = {keys, missing, timeoutMs, done, timer: undefined};
        waiter.timer = setTimeout(() => {
            const stillMissing = [...waiter.missing];
            this.settle(waiter, {
                ok: false,
                code: ErrorCodes.storeTimeout,
                message: `kv_wait timed out after ${timeoutMs} ms: ${stillMissing.length} of ${keys.length} keys never set: ${listSome(stillMissing.map((k) => JSON.stringify(k)))}`
            });
        }, timeoutMs);
        this.waiters.add(waiter);
        for (const key of missing) {
            let set = this.waitersByKey.get(key);
            if (set === undefined) this.waitersByKey.set(key, (set = new Set()));
            set.add(waiter);
        }
        return () => this.remove(waiter);
    }

    /** Settles every pending wait with an error (abort, shutdown). */
    failAll(code: string, message: string): void {
        for (const waiter of [...this.waiters]) this.settle(waiter, {ok: false, code, message});
    }

    get pendingWaits(): number {
        return this.waiters.size;
    }

    private settle(waiter: Waiter, outcome: WaitOutcome): void {
        if (!this.remove(waiter)) return;
        waiter.done(outcome);
    }

    /** Unregisters a waiter and clears its timer; false when it was already gone. */
    private remove(waiter: Waiter): boolean {
        if (!this.waiters.delete(waiter)) return false;
        clearTimeout(waiter.timer);
        for (const key of waiter.missing) {
            const set = this.waitersByKey.get(key);
            set?.delete(waiter);
            if (set?.size === 0) this.waitersByKey.delete(key);
        }
        return true;
    }
}

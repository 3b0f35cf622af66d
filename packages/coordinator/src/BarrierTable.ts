/**
 * Named barriers with generations.
 *
 * Vocabulary: every rank counts its own calls per barrier name; its n-th call to a name belongs to
 * *generation* n of that name, and generation n completes when every rank of the world has
 * *arrived* at it. A rank that arrived stays arrived even if its own wait later ends (timeout,
 * disconnect): it did reach the barrier, and the others must not wait for a second arrival that
 * the rank's next call (generation n+1) will never make. Arrived ranks that are still waiting for
 * the reply are the generation's *waiters*.
 */
import {ErrorCodes} from "@mixz/protocol";
import {listSome, type WaitOutcome} from "./KvStore.js";

interface Generation {
    readonly arrived: Set<number>;
    readonly waiters: Map<number, Waiter>;
}

interface Waiter {
    readonly done: (outcome: WaitOutcome) => void;
    readonly timer: NodeJS.Timeout;
}

export class BarrierTable {
    /** Ranks that have left the job (bye, lost) → how, for messages: barriers without them can never complete. */
    private readonly departed = new Map<number, string>();
    /** name → rank → number of calls that rank has made to the name. */
    private readonly calls = new Map<string, Map<number, number>>();
    /** name → generation → state; a generation is removed once complete. */
    private readonly generations = new Map<string, Map<number, Generation>>();

    /**
     * @param worldSize how many ranks make a generation complete.
     * @param describeRank names a rank in error messages ("rank 3 (host worker-1)").
     */
    constructor(private readonly worldSize: number, private readonly describeRank: (rank: number) => string) {}

    /**
     * `rank` enters barrier `name`. `done` may run before arrive() returns (this rank completed
     * the generation). Returns a function that ends this rank's wait without calling `done`.
     */
    arrive(name: string, rank: number, timeoutMs: number, done: (outcome: WaitOutcome) => void): () => void {
        let callsOfName = this.calls.get(name);
        if (callsOfName === undefined) this.calls.set(name, (callsOfName = new Map()));
        const generationIndex = callsOfName.get(rank) ?? 0;
        callsOfName.set(rank, generationIndex + 1);

        let generationsOfName = this.generations.get(name);
        if (generationsOfName === undefined) this.generations.set(name, (generationsOfName = new Map()));
        let generation = generationsOfName.get(generationIndex);
        if (generation === undefined) generationsOfName.set(generationIndex, (generation = {arrived: new Set(), waiters: new Map()}));
        generation.arrived.add(rank);

        const missing = this.departedAbsentees(generation);
        if (missing !== undefined) {
            done(this.cannotComplete(name, generationIndex, missing));
            return () => {};
        }
        if (generation.arrived.size === this.worldSize) {
            generationsOfName.delete(generationIndex);
            if (generationsOfName.size === 0) this.generations.delete(name);
            for (const waiter of generation.waiters.values()) {
                clearTimeout(waiter.timer);
                waiter.done({ok: true, values: []});
            }
            done({ok: true, values: []});
            return () => {};
        }

        const current = generation;
        const timer = setTimeout(() => {
            current.waiters.delete(rank);
            const absent: number[] = [];
            for (let r = 0; r < this.worldSize; r++) if (!current.arrived.has(r)) absent.push(r);
            done({
                ok: false,
                code: ErrorCodes.storeTimeout,
                message: `barrier ${JSON.stringify(name)} (call ${generationIndex + 1}) timed out after ${timeoutMs} ms: ${absent.length} of ${this.worldSize} ranks did not arrive: ${listSome(absent.map(this.describeRank))}`
            });
        }, timeoutMs);
        current.waiters.set(rank, {done, timer});
        return () => {
            const waiter = current.waiters.get(rank);
            if (waiter === undefined) return;
            clearTimeout(waiter.timer);
            current.waiters.delete(rank);
        };
    }

    /**
     * `rank` has left the job (`how`: "said bye with exit code 0", "was lost: heartbeat"…). Every
     * generation it has not arrived at can never complete: its waiters get an error naming the rank
     * at once, rather than a timeout minutes later that blames the ranks still waiting.
     */
    rankDeparted(rank: number, how: string): void {
        this.departed.set(rank, how);
        for (const [name, generationsOfName] of this.generations) {
            for (const [index, generation] of generationsOfName) {
                if (generation.arrived.has(rank)) continue;
                const waiters = [...generation.waiters.values()];
                generation.waiters.clear();
                for (const waiter of waiters) {
                    clearTimeout(waiter.timer);
                    waiter.done(this.cannotComplete(name, index, [rank]));
                }
            }
        }
    }

    private departedAbsentees(generation: Generation): number[] | undefined {
        const absent = [...this.departed.keys()].filter((rank) => !generation.arrived.has(rank));
        return absent.length === 0 ? undefined : absent;
    }

    private cannotComplete(name: string, generationIndex: number, ranks: readonly number[]): WaitOutcome {
        const who = ranks.map((rank) => `${this.describeRank(rank)} ${this.departed.get(rank) ?? "left"}`);
        return {
            ok: false,
            code: ErrorCodes.rankDeparted,
            message: `barrier ${JSON.stringify(name)} (call ${generationIndex + 1}) can never complete: ${listSome(who)}`
        };
    }

    /** Ends every pending wait with an error (abort, shutdown). */
    failAll(code: string, message: string): void {
        for (const generationsOfName of this.generations.values()) {
            for (const generation of generationsOfName.values()) {
                const waiters = [...generation.waiters.values()];
                generation.waiters.clear();
                for (const waiter of waiters) {
                    clearTimeout(waiter.timer);
                    waiter.done({ok: false, code, message});
                }
            }
        }
    }

    get pendingWaits(): number {
        let count = 0;
        for (const generationsOfName of this.generations.values()) {
            for (const generation of generationsOfName.values()) count += generation.waiters.size;
        }
        return count;
    }
}

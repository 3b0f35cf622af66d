import type {AddressExchange} from "./Communicator.js";

/** The part of a key-value store storeExchange needs; `runtime.store` of a rank script has it. */
export interface ExchangeStore {
    set(key: string, value: Uint8Array): Promise<void>;
    wait(keys: readonly string[], timeoutMs?: number): Promise<Uint8Array[]>;
}

export interface StoreExchangeOptions {
    /** Unique per communicator built in the job, e.g. "comm/world". */
    readonly prefix: string;
    readonly rank: number;
    readonly worldSize: number;
    /** How long to wait for every rank's address. */
    readonly timeoutMs: number;
}

/**
 * An AddressExchange over a key-value store with a barrier-free wait, such as the `runtime.store`
 * a rank script gets from `mixz`: sets `<prefix>/<rank>` and waits for every rank's key. The
 * prefix must be unique per communicator built in the job (e.g. "comm/world").
 */
export function storeExchange(store: ExchangeStore, options: StoreExchangeOptions): AddressExchange {
    return async (mine) => {
        await store.set(`${options.prefix}/${options.rank}`, mine);
        const keys = Array.from({length: options.worldSize}, (_, r) => `${options.prefix}/${r}`);
        return store.wait(keys, options.timeoutMs);
    };
}


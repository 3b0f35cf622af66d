// N ranks as communicators of this one process, exchanging addresses through an in-memory store.
import {Communicator, storeExchange, type CommunicatorOptions} from "@mixz/engine";

export async function inProcessWorld(n: number, options: Partial<CommunicatorOptions> & {jobId: string; hosts?: string[]}): Promise<Communicator[]> {
    const hosts = options.hosts ?? Array.from({length: n}, () => "localhost");
    const store = new Map<string, Uint8Array>();
    const waiters: Array<() => void> = [];
    const exchangeStore = {
        async set(key: string, value: Uint8Array): Promise<void> {
            store.set(key, value);
            for (const wake of waiters.splice(0)) wake();
        },
        async wait(keys: readonly string[]): Promise<Uint8Array[]> {
            while (!keys.every((key) => store.has(key))) await new Promise<void>((resolve) => waiters.push(resolve));
            return keys.map((key) => store.get(key)!);
        }
    };
    return Promise.all(Array.from({length: n}, (_, rank) => {
        const localRanks = hosts.flatMap((host, r) => (host === hosts[rank] ? [r] : []));
        const {hosts: _hosts, ...rest} = options;
        return Communicator.create(
            {rank, worldSize: n, host: hosts[rank]!, localRanks, timeoutMs: 20_000, bindAddress: "127.0.0.1", ...rest},
            storeExchange(exchangeStore, {prefix: "world", rank, worldSize: n, timeoutMs: 20_000})
        );
    }));
}

export async function disposeAll(comms: readonly Communicator[]): Promise<void> {
    await Promise.all(comms.map((comm) => comm.dispose()));
}


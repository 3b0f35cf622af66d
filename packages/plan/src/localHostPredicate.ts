import {hostname, networkInterfaces} from "node:os";

/**
 * A predicate telling whether a host of the plan is this machine, so its ranks are spawned as
 * child processes instead of over SSH. Loopback names and IPv4 loopback addresses, this machine's
 * host name (short or full) and the addresses of its own interfaces count as local. Names are
 * compared, never resolved: a plan must not depend on DNS, and two names for one machine
 * (127.0.0.1, 127.0.0.2) stay two nodes. The machine's names and addresses are read once, when
 * the predicate is made, not once per host.
 */
export function localHostPredicate(): (host: string) => boolean {
    const own = hostname().toLowerCase();
    const names = new Set(["localhost", own, own.split(".")[0]!]);
    for (const addresses of Object.values(networkInterfaces())) {
        for (const address of addresses ?? []) names.add(address.address.toLowerCase());
    }
    return (host) => {
        const name = host.toLowerCase();
        return names.has(name) || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
    };
}

import {hostname, networkInterfaces} from "node:os";

/**
 * Whether a host of the plan is this machine, so its ranks are spawned as child processes instead
 * of over SSH. Loopback names and addresses, this machine's host name (short or full) and the
 * addresses of its own interfaces count as local. Names are compared, never resolved: a plan must
 * not depend on DNS, and two names for one machine (127.0.0.1, 127.0.0.2) stay two nodes.
 */
export function isLocalHost(host: string): boolean {
    const name = host.toLowerCase();
    if (name === "localhost" || name === "::1" || name === "ip6-localhost" || /^127\.\d+\.\d+\.\d+$/.test(name)) return true;
    const own = hostname().toLowerCase();
    if (name === own || name === own.split(".")[0]) return true;
    for (const addresses of Object.values(networkInterfaces())) {
        for (const address of addresses ?? []) {
            if (address.address.toLowerCase() === name) return true;
        }
    }
    return false;
}

import {homedir} from "node:os";
import {ErrorCodes, MixzError} from "@mixz/protocol";
import type {SshTarget} from "./api.js";

/**
 * Why a host cannot be used over SSH. Stable words: they are `context.cause` of the MixzError, for
 * tools and tests; the message says the same for people.
 */
export type SshFailureCause =
    | "dns"
    | "refused"
    | "timeout"
    | "unreachable"
    | "reset"
    | "auth"
    | "host-key-unknown"
    | "host-key-changed"
    | "host-key-revoked"
    | "handshake"
    | "closed"
    | "lost"
    | "channel"
    | "known-hosts";

/** `node-a (127.0.0.1:2222)`, or just `gpu1` when the name is the address and the port is 22. */
export function describeTarget(target: Pick<SshTarget, "host" | "hostName" | "port">): string {
    if (target.hostName === target.host && target.port === 22) return target.host;
    return `${target.host} (${target.hostName}:${target.port})`;
}

/** A path as people write it: `~/.ssh/id_ed25519` under the home directory. */
export function displayPath(path: string, home = homedir()): string {
    return home !== "" && home !== "/" && path.startsWith(`${home}/`) ? `~/${path.slice(home.length + 1)}` : path;
}

/** The one error the SSH layer raises: `ssh <host>: <detail>`, code MIXZ_ERR_SSH, category infra. */
export function sshError(
    target: Pick<SshTarget, "host" | "hostName" | "port">,
    cause: SshFailureCause,
    detail: string,
    options: {readonly context?: Readonly<Record<string, unknown>>; readonly error?: unknown} = {}
): MixzError {
    return new MixzError(ErrorCodes.ssh, `ssh ${describeTarget(target)}: ${detail}`, {
        category: "infra",
        context: {host: target.host, hostName: target.hostName, port: target.port, cause, detail, ...options.context},
        ...(options.error !== undefined ? {cause: options.error} : {})
    });
}

/** Socket errors of the TCP connect (ssh2 level "client-socket"), classified by errno code. */
export function classifySocketError(error: NodeJS.ErrnoException, hostName: string): {cause: SshFailureCause; detail: string} {
    switch (error.code) {
        case "ENOTFOUND":
        case "EAI_AGAIN":
        case "EAI_NONAME":
        case "EAI_FAIL":
        case "EAI_NODATA":
            return {cause: "dns", detail: `cannot resolve host name ${hostName} (${error.code})`};
        case "ECONNREFUSED":
            return {cause: "refused", detail: "connection refused (is sshd running, and is the port right?)"};
        case "ETIMEDOUT":
            return {cause: "timeout", detail: "timed out while connecting (ETIMEDOUT)"};
        case "EHOSTUNREACH":
        case "ENETUNREACH":
        case "EHOSTDOWN":
        case "ENETDOWN":
        case "EADDRNOTAVAIL":
            return {cause: "unreachable", detail: `host unreachable (${error.code})`};
        case "ECONNRESET":
        case "EPIPE":
            return {cause: "reset", detail: `connection reset by the server during the handshake (${error.code})`};
        default:
            return {cause: "handshake", detail: `connection failed: ${error.message}`};
    }
}

/** `10 s`, `1.5 s`. */
export function formatSeconds(ms: number): string {
    const seconds = ms / 1000;
    return `${Number.isInteger(seconds) ? seconds : seconds.toFixed(1)} s`;
}

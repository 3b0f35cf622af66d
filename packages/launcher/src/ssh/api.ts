/**
 * Value types of the SSH layer: how a host of the plan is reached, the outcome of a host key check,
 * and the remote process of one exec channel. Implementations live in their own files
 * (resolveSshTarget, KnownHosts, SshConnection, SshRemoteProcess, probeHosts).
 *
 * Vocabulary:
 * - host: the name as written in the plan (hostfile), possibly an alias of ~/.ssh/config.
 * - hostName: what the alias resolves to (config HostName, else the host itself); the TCP peer.
 * - known-hosts name: the name looked up in and recorded to known_hosts, as OpenSSH does it: the
 *   config's HostKeyAlias as written (no port), else hostName, written `[hostName]:port` when the
 *   port is not 22. Host aliases are never looked up, so the known_hosts that `ssh node-a` wrote
 *   (it records the HostName) serves mixz too.
 */
import type {Readable} from "node:stream";
import type {Logger} from "@mixz/log";

/** `StrictHostKeyChecking` of ~/.ssh/config, normalised (`off` → `no`). `ask` acts as `yes`: mixz never prompts. */
export type StrictHostKeyChecking = "yes" | "no" | "ask" | "accept-new";

/** Everything needed to reach one host: the result of resolveSshTarget. */
export interface SshTarget {
    /** The name as in the plan (an alias of ~/.ssh/config or a real name). */
    readonly host: string;
    /** Where to connect: config HostName (with %h expanded), else `host`. */
    readonly hostName: string;
    /** --ssh-port, else config Port, else 22. */
    readonly port: number;
    /** Remote user: config User, else the local user name. */
    readonly user: string;
    /** Private key files to offer, in order (absolute paths, existing or not when they came from the config). */
    readonly identityFiles: readonly string[];
    /** known_hosts files to consult; the first one receives accepted keys. */
    readonly knownHostsFiles: readonly string[];
    /** The name looked up in known_hosts instead of hostName (config HostKeyAlias). */
    readonly hostKeyAlias?: string;
    readonly strictHostKeyChecking?: StrictHostKeyChecking;
}

/**
 * Outcome of checking a presented host key against known_hosts:
 * - match: a line for this host carries exactly this key;
 * - unknown: no line for this host carries a key of this type (keys of other types may exist);
 * - changed: a line for this host carries a different key of the same type;
 * - revoked: the key is listed under `@revoked` (refused like a changed key).
 */
export type HostKeyStatus = "match" | "unknown" | "changed" | "revoked";

/** A host key check with where the verdict came from (for error messages). */
export interface HostKeyCheck {
    readonly status: HostKeyStatus;
    /** The key type of the presented key (`ssh-ed25519`). */
    readonly keyType: string;
    /** `SHA256:…` of the presented key, as `ssh-keygen -l` prints it. */
    readonly fingerprint: string;
    /** For changed and revoked: the known_hosts line that decided it. */
    readonly file?: string;
    readonly line?: number;
    /** For changed: the fingerprint of the key known_hosts expected. */
    readonly expectedFingerprint?: string;
}

/** How SshConnection.open connects and authenticates. */
export interface SshConnectOptions {
    /** TCP connect + key exchange + authentication must finish within this (default 10 000 ms). */
    readonly connectTimeoutMs?: number;
    /** Accept and record a host key known_hosts has never seen (--ssh-accept-new-host-keys). Changed keys are refused regardless. */
    readonly acceptNewHostKeys: boolean;
    /** ssh-agent socket; default `process.env.SSH_AUTH_SOCK`; null: do not use an agent. */
    readonly agentSocket?: string | null;
    /** Keepalive request interval (default 5 000 ms); the connection counts as lost after keepaliveCountMax unanswered ones (default 3). */
    readonly keepaliveIntervalMs?: number;
    readonly keepaliveCountMax?: number;
    readonly logger: Logger;
}

/** How one remote command runs. */
export interface RemoteExecOptions {
    /** Remote working directory (the launcher's cwd: mixz assumes a shared file system, as DeepSpeed does). */
    readonly cwd: string;
    /** Variables set for the command (names must match [A-Za-z_][A-Za-z0-9_]*). */
    readonly env: Readonly<Record<string, string>>;
    /** Written to the command's stdin right after it starts; stdin stays open (it is the daemon's lifeline). */
    readonly stdin?: string;
}

/** How a remote command ended: `code` from exit-status, `signal` (`SIGKILL`) from exit-signal; both null when the channel closed without either (connection lost, or closed by us). */
export interface RemoteExit {
    readonly code: number | null;
    readonly signal: string | null;
}

/**
 * A command running in one exec channel. Its output must be consumed (piped or read): SSH flow
 * control stops the remote writer, and `exit` never settles, while a window is full.
 */
export interface RemoteProcess {
    /** The plan's host it runs on. */
    readonly host: string;
    readonly stdout: Readable;
    readonly stderr: Readable;
    /** Settles once the channel has closed; never rejects. */
    readonly exit: Promise<RemoteExit>;
    /** Writes to the command's stdin; false (and nothing written) once stdin is closed. */
    writeStdin(text: string): boolean;
    /** Sends EOF on stdin. */
    closeStdin(): void;
    /**
     * Closes the channel. The remote command sees EOF on stdin (and EPIPE on output) and must exit by
     * itself: SSH cannot reliably signal a remote process nor tell its pid (ssh2 #382, #776).
     */
    close(): void;
    /** close(), then wait until the channel is gone. */
    [Symbol.asyncDispose](): Promise<void>;
}

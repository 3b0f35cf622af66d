import {readFileSync, statSync} from "node:fs";
import ssh2 from "ssh2";
import type {AnyAuthMethod, AuthenticationType, ClientChannel, ConnectConfig, ServerHostKeyAlgorithm} from "ssh2";
import type {MixzError} from "@mixz/protocol";
import type {Logger} from "@mixz/log";
import type {HostKeyCheck, RemoteExecOptions, RemoteProcess, SshConnectOptions, SshTarget} from "./api.js";
import {buildRemoteCommand} from "./buildRemoteCommand.js";
import {KnownHosts, knownHostsName as formatKnownHostsName} from "./KnownHosts.js";
import {SshRemoteProcess} from "./SshRemoteProcess.js";
import {classifySocketError, displayPath, formatSeconds, sshError} from "./sshError.js";

const {Client, utils} = ssh2;
type Ssh2Client = InstanceType<typeof Client>;

export const kDefaultConnectTimeoutMs = 10_000;
export const kDefaultKeepaliveIntervalMs = 5_000;
export const kDefaultKeepaliveCountMax = 3;

/** Host key algorithms ssh2 may negotiate for a key type found in known_hosts. */
const kAlgorithmsOfKeyType: Readonly<Record<string, readonly ServerHostKeyAlgorithm[]>> = {
    "ssh-ed25519": ["ssh-ed25519"],
    "ecdsa-sha2-nistp256": ["ecdsa-sha2-nistp256"],
    "ecdsa-sha2-nistp384": ["ecdsa-sha2-nistp384"],
    "ecdsa-sha2-nistp521": ["ecdsa-sha2-nistp521"],
    "ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
};
/** ssh2's default preference (ed25519 first: Node ≥ 12 always has it). */
const kDefaultHostKeyAlgorithms: readonly ServerHostKeyAlgorithm[] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa"
];

interface AuthAttempt {
    /** How the attempt is named in "tried: …". */
    readonly label: string;
    readonly method: AnyAuthMethod;
}

/**
 * One SSH connection to one host, carrying one exec channel per rank (DESIGN.md §1). Opening it
 * does all the checks a launch needs before any rank starts: name resolution, TCP connect, host
 * key against known_hosts, authentication. Every failure is a MixzError (MIXZ_ERR_SSH, category
 * infra) whose one-line message names the host and the cause; `context.cause` is an
 * SshFailureCause.
 *
 * Host keys: unknown → refused unless acceptNewHostKeys (or the config's StrictHostKeyChecking is
 * accept-new/no), in which case the key is appended to the first known_hosts file once the key
 * exchange has proven that the server holds it. Changed or revoked → always refused.
 *
 * Authentication: ssh-agent first (if its socket exists), then each identity file; a key with a
 * passphrase is skipped with a debug log (mixz never prompts). Password and keyboard-interactive
 * are never tried.
 */
export class SshConnection {
    readonly target: SshTarget;
    /** Settles when the connection is gone: null after close(), the MixzError that ended it otherwise (keepalive timeout, reset). */
    readonly closed: Promise<MixzError | null>;
    readonly #client: Ssh2Client;
    readonly #logger: Logger;
    #closing = false;
    #ended = false;

    private constructor(target: SshTarget, client: Ssh2Client, logger: Logger) {
        this.target = target;
        this.#client = client;
        this.#logger = logger;
        let lastError: Error | undefined;
        client.on("error", (error: Error) => {
            lastError = error;
            logger.debug({err: error}, "ssh connection error");
        });
        this.closed = new Promise((resolve) => {
            client.once("close", () => {
                this.#ended = true;
                if (this.#closing) {
                    resolve(null);
                    return;
                }
                const detail = lastError !== undefined ? `connection lost: ${lastError.message}` : "connection closed by the server";
                const error = sshError(target, "lost", detail, {error: lastError});
                logger.warn(error.message);
                resolve(error);
            });
        });
    }

    /** Connects, verifies the host key and authenticates within `connectTimeoutMs`. */
    static open(target: SshTarget, options: SshConnectOptions): Promise<SshConnection> {
        const timeoutMs = options.connectTimeoutMs ?? kDefaultConnectTimeoutMs;
        if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) return Promise.reject(new RangeError(`connectTimeoutMs must be a positive number, got ${timeoutMs}`));
        const logger = options.logger.child({host: target.host});
        // OpenSSH looks up and records `[hostName]:port` (bare for 22), or the HostKeyAlias as it is, without a port.
        const knownHostsName = target.hostKeyAlias ?? target.hostName;
        const knownHostsPort = target.hostKeyAlias !== undefined ? 22 : target.port;
        let knownHosts: KnownHosts;
        try {
            knownHosts = KnownHosts.load(target.knownHostsFiles);
        } catch (error) {
            return Promise.reject(sshError(target, "known-hosts", `cannot read known_hosts: ${(error as Error).message}`, {error}));
        }
        for (const problem of knownHosts.problems) logger.debug(`${problem.file}:${problem.line}: skipped: ${problem.message}`);
        const acceptNew = options.acceptNewHostKeys || target.strictHostKeyChecking === "accept-new" || target.strictHostKeyChecking === "no";
        const knownHostsFile = target.knownHostsFiles[0] !== undefined ? displayPath(target.knownHostsFiles[0]) : "~/.ssh/known_hosts";
        const {attempts, skipped} = prepareAuthAttempts(target, options.agentSocket === undefined ? process.env["SSH_AUTH_SOCK"] : options.agentSocket, logger);

        return new Promise<SshConnection>((resolve, reject) => {
            const client = new Client();
            const tried: string[] = [];
            let hostKey: HostKeyCheck | undefined;
            let keyToRecord: Buffer | undefined;
            let settled = false;
            let lastError: (Error & {level?: string; code?: string}) | undefined;

            const fail = (error: MixzError): void => {
                if (settled) return;
                settled = true;
                clearTimeout(timer);
                client.removeAllListeners("ready");
                // Keep an error listener: ssh2 may still emit while the socket goes down.
                client.on("error", () => {});
                client.destroy();
                logger.debug(error.message);
                reject(error);
            };
            const timer = setTimeout(() => fail(sshError(target, "timeout", `timed out after ${formatSeconds(timeoutMs)}`)), timeoutMs);

            client.on("error", (error: Error & {level?: string; code?: string}) => {
                // Non-fatal: ssh2 reports an unusable agent or a key that cannot sign, then tries the next method.
                if (error.level === "agent" || /^Error (signing data|while signing) with key/.test(error.message)) {
                    logger.debug({err: error}, "authentication method skipped");
                    return;
                }
                lastError = error;
                fail(classifyOpenError(target, error, hostKey, {tried, skipped, knownHostsFile}));
            });
            client.on("handshake", (negotiated) => {
                logger.debug({negotiated}, "key exchange done");
                // The server has now proven (signature over the exchange hash) that it holds the key.
                if (keyToRecord !== undefined) {
                    try {
                        const entry = knownHosts.append(knownHostsName, knownHostsPort, keyToRecord);
                        logger.warn(`permanently added ${hostKey?.keyType} key ${hostKey?.fingerprint} for ${formatKnownHostsName(knownHostsName, knownHostsPort)} to ${displayPath(entry.file)}`);
                    } catch (error) {
                        fail(sshError(target, "known-hosts", `cannot record the host key in ${knownHostsFile}: ${(error as Error).message}`, {error}));
                    }
                    keyToRecord = undefined;
                }
            });
            client.once("ready", () => {
                if (settled) return;
                settled = true;
                clearTimeout(timer);
                client.removeAllListeners("error");
                client.removeAllListeners("close");
                logger.debug({user: target.user, via: tried.at(-1)}, "connected");
                resolve(new SshConnection(target, client, logger));
            });
            client.on("close", () => {
                const detail = lastError !== undefined ? lastError.message : "the server closed the connection before authentication (see its log; MaxStartups?)";
                fail(sshError(target, "closed", detail, {error: lastError}));
            });

            const config: ConnectConfig = {
                host: target.hostName,
                port: target.port,
                username: target.user,
                readyTimeout: 0, // our own timer covers connect, key exchange and authentication
                keepaliveInterval: options.keepaliveIntervalMs ?? kDefaultKeepaliveIntervalMs,
                keepaliveCountMax: options.keepaliveCountMax ?? kDefaultKeepaliveCountMax,
                hostVerifier: (key: Buffer): boolean => {
                    hostKey = knownHosts.check(knownHostsName, knownHostsPort, key);
                    logger.debug({hostKey}, "host key checked");
                    if (hostKey.status === "match") return true;
                    if (hostKey.status === "unknown" && acceptNew) {
                        keyToRecord = Buffer.from(key);
                        return true;
                    }
                    return false;
                },
                authHandler: (methodsLeft: AuthenticationType[] | null, _partialSuccess: boolean | null, next) => {
                    const attempt = methodsLeft === null || methodsLeft.includes("publickey") ? attempts.shift() : undefined;
                    if (attempt === undefined) {
                        // ssh2 ends authentication when handed `false` (its typings omit it).
                        next(false as unknown as AnyAuthMethod);
                        return;
                    }
                    tried.push(attempt.label);
                    logger.debug(`trying ${attempt.label}`);
                    next(attempt.method);
                }
            };
            const preferred = preferredHostKeyAlgorithms(knownHosts.keyTypesFor(knownHostsName, knownHostsPort));
            if (preferred !== undefined) config.algorithms = {serverHostKey: preferred};
            try {
                client.connect(config);
            } catch (error) {
                fail(sshError(target, "handshake", `cannot start the connection: ${(error as Error).message}`, {error}));
            }
        });
    }

    /**
     * Runs `argv` in `cwd` with `env` added, in a new exec channel (see buildRemoteCommand for the
     * command line). Resolves once the channel is open; the command's end is `exit`.
     */
    exec(argv: readonly string[], options: RemoteExecOptions): Promise<RemoteProcess> {
        let command: string;
        try {
            command = buildRemoteCommand(argv, options);
        } catch (error) {
            return Promise.reject(error);
        }
        if (this.#ended || this.#closing) return Promise.reject(sshError(this.target, "channel", "cannot start a command: the connection is closed"));
        return new Promise((resolve, reject) => {
            this.#logger.debug({command}, "exec");
            const opened = (error: Error | undefined, channel: ClientChannel): void => {
                if (error !== undefined) {
                    // sshd refuses channels beyond its MaxSessions (default 10) on one connection with a bare "open failed".
                    const hint = /open failed/i.test(error.message) ? " (sshd allows MaxSessions channels per connection, 10 by default)" : "";
                    reject(sshError(this.target, "channel", `cannot start a command: ${error.message}${hint}`, {error}));
                    return;
                }
                const process = new SshRemoteProcess(this.target.host, channel, this.#logger);
                if (options.stdin !== undefined) process.writeStdin(options.stdin);
                resolve(process);
            };
            try {
                this.#client.exec(command, opened);
            } catch (error) {
                // ssh2 throws "Not connected" when the socket is already gone but `close` has not been emitted yet.
                opened(error as Error, undefined as unknown as ClientChannel);
            }
        });
    }

    /** Ends the connection (and with it every channel: their commands see stdin EOF). */
    close(): void {
        if (this.#closing) return;
        this.#closing = true;
        this.#client.end();
    }

    async [Symbol.asyncDispose](): Promise<void> {
        this.close();
        await this.closed;
    }
}

/** Agent first, then identity files; unreadable, public-only and passphrase-protected keys are skipped. */
function prepareAuthAttempts(
    target: SshTarget,
    agentSocket: string | null | undefined,
    logger: Logger
): {attempts: AuthAttempt[]; skipped: string[]} {
    const attempts: AuthAttempt[] = [];
    const skipped: string[] = [];
    if (agentSocket !== undefined && agentSocket !== null && agentSocket !== "") {
        let isSocket = false;
        try {
            isSocket = statSync(agentSocket).isSocket();
        } catch {
            isSocket = false;
        }
        if (isSocket) attempts.push({label: "agent", method: {type: "agent", username: target.user, agent: agentSocket}});
        else logger.debug(`ssh-agent socket ${agentSocket} does not exist; agent not used`);
    }
    for (const file of target.identityFiles) {
        const shown = displayPath(file);
        let data: Buffer;
        try {
            data = readFileSync(file);
        } catch (error) {
            const code = (error as NodeJS.ErrnoException).code ?? "unreadable";
            logger.debug(`identity file ${shown} skipped: ${code}`);
            if (code !== "ENOENT") skipped.push(`${shown} (${code})`);
            continue;
        }
        const parsed = utils.parseKey(data);
        if (parsed instanceof Error) {
            const reason = /passphrase|encrypted/i.test(parsed.message) ? "passphrase" : "unreadable key";
            logger.debug(`identity file ${shown} skipped: ${reason === "passphrase" ? "protected by a passphrase (mixz does not prompt; load it into ssh-agent)" : parsed.message}`);
            skipped.push(`${shown} (${reason})`);
            continue;
        }
        const key = Array.isArray(parsed) ? (parsed[0] as typeof parsed | undefined) : parsed;
        if (key === undefined || !key.isPrivateKey()) {
            logger.debug(`identity file ${shown} skipped: not a private key`);
            skipped.push(`${shown} (not a private key)`);
            continue;
        }
        attempts.push({label: shown, method: {type: "publickey", username: target.user, key: data}});
    }
    return {attempts, skipped};
}

function preferredHostKeyAlgorithms(knownTypes: readonly string[]): ServerHostKeyAlgorithm[] | undefined {
    const preferred: ServerHostKeyAlgorithm[] = [];
    for (const type of knownTypes) {
        for (const algorithm of kAlgorithmsOfKeyType[type] ?? []) if (!preferred.includes(algorithm)) preferred.push(algorithm);
    }
    if (preferred.length === 0) return undefined;
    return [...preferred, ...kDefaultHostKeyAlgorithms.filter((algorithm) => !preferred.includes(algorithm))];
}

function classifyOpenError(
    target: SshTarget,
    error: Error & {level?: string; code?: string},
    hostKey: HostKeyCheck | undefined,
    auth: {readonly tried: readonly string[]; readonly skipped: readonly string[]; readonly knownHostsFile: string}
): MixzError {
    if (error.level === "client-socket") {
        const {cause, detail} = classifySocketError(error as NodeJS.ErrnoException, target.hostName);
        return sshError(target, cause, detail, {error});
    }
    if (error.level === "client-timeout") return sshError(target, "timeout", error.message, {error});
    if (hostKey !== undefined && /Host denied/.test(error.message)) {
        const key = `${hostKey.keyType} ${hostKey.fingerprint}`;
        const context = {fingerprint: hostKey.fingerprint, keyType: hostKey.keyType};
        switch (hostKey.status) {
            case "unknown":
                return sshError(target, "host-key-unknown", `unknown host key (${key}); add it to ${auth.knownHostsFile} or pass --ssh-accept-new-host-keys`, {context, error});
            case "changed":
                return sshError(
                    target,
                    "host-key-changed",
                    `HOST KEY CHANGED (now ${key}, expected ${hostKey.expectedFingerprint} at ${displayPath(hostKey.file ?? "")}:${hostKey.line}); possible man-in-the-middle; fix ${auth.knownHostsFile}`,
                    {context: {...context, expectedFingerprint: hostKey.expectedFingerprint}, error}
                );
            case "revoked":
                return sshError(target, "host-key-revoked", `host key ${key} is marked @revoked in ${displayPath(hostKey.file ?? "")}:${hostKey.line}`, {context, error});
            case "match":
                break;
        }
    }
    if (error.level === "client-authentication") {
        const tried = auth.tried.length > 0 ? auth.tried.join(", ") : "nothing: no ssh-agent and no usable identity file";
        const skipped = auth.skipped.length > 0 ? `; skipped: ${auth.skipped.join(", ")}` : "";
        return sshError(target, "auth", `authentication failed as ${target.user} (tried: ${tried}${skipped})`, {context: {user: target.user, tried: auth.tried}, error});
    }
    return sshError(target, "handshake", `SSH handshake failed: ${error.message}`, {error});
}

/**
 * A rank daemon's connection to the coordinator.
 *
 * Lifecycle: connect() reaches the coordinator (retrying refused connections until
 * connectTimeoutMs: the daemon may start before the coordinator's address is reachable), says
 * hello, waits for `welcome`, starts heartbeating, waits for `ready` (every rank joined) within
 * joinTimeoutMs, and resolves. Failures before that reject connect() and nothing else; after it,
 * an `abort` frame calls onAbort and a lost connection calls onLost, once.
 *
 * Heartbeats run on setInterval in the caller's thread on purpose: the daemon's script runs on
 * that thread, so a script stuck in synchronous code stops the heartbeats and the coordinator
 * notices. Heartbeats start at the welcome rather than at ready, so that a rank that hangs while
 * others are still joining is noticed too.
 *
 * Every request has a deadline: kv_wait and barrier carry their timeout to the coordinator (which
 * answers with an error when it passes) and keep a local one a little longer in case the
 * coordinator never answers; kv_set and kv_get use requestTimeoutMs.
 */
import type {Socket} from "node:net";
import {
    decodeCoordinatorMessage,
    encodeMessage,
    ErrorCodes,
    kMaxFrameBytes,
    MixzError,
    PROTOCOL_VERSION,
    truncateText,
    type CoordinatorMessage,
    type DaemonMessage,
    type MetricsMessage,
    type ReplyMessage
} from "@mixz/protocol";
import type {Logger} from "@mixz/log";
import {WebSocket, type RawData} from "ws";
import type {CoordinatorClientOptions} from "./api.js";

const kDefaultRequestTimeoutMs = 30_000;
/** Extra time the local deadline of a kv_wait or barrier gives the coordinator's own answer. */
const kReplyGraceMs = 5_000;
const kFirstRetryDelayMs = 50;
const kMaxRetryDelayMs = 1_000;
/** How long close() waits for the close handshake before cutting the socket. */
const kCloseGraceMs = 1_000;
/** Connection errors worth retrying: the coordinator or the route to it is not up yet. */
const kRetryableConnectErrors = new Set(["ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "ENETUNREACH", "ENETDOWN", "EAI_AGAIN", "ETIMEDOUT"]);

interface PendingRequest {
    readonly what: string;
    readonly resolve: (values: ReadonlyArray<Uint8Array | null>) => void;
    readonly reject: (error: MixzError) => void;
    readonly timer: NodeJS.Timeout;
}

/**
 * welcoming: hello sent, waiting for welcome or reject. joining: welcomed and heartbeating, waiting
 * for ready. ready: connect() resolved. ended: lost, aborted, refused or closed.
 */
type Phase = "welcoming" | "joining" | "ready" | "ended";

function lostError(message: string, context: Record<string, unknown> = {}, cause?: unknown): MixzError {
    return new MixzError(ErrorCodes.coordinatorLost, message, cause === undefined ? {category: "infra", context} : {category: "infra", context, cause});
}

/** One connection attempt: resolves with the open socket, or rejects with the socket error. */
function openSocket(url: string, timeoutMs: number, maxPayload: number): Promise<{ws: WebSocket; socket: Socket}> {
    return new Promise((resolve, reject) => {
        const ws = new WebSocket(url, {maxPayload, perMessageDeflate: false, handshakeTimeout: Math.max(1, Math.ceil(timeoutMs))});
        let socket: Socket | undefined;
        ws.once("upgrade", (response) => {
            socket = response.socket as Socket;
        });
        const onError = (error: Error): void => {
            ws.removeListener("open", onOpen);
            reject(error);
        };
        const onOpen = (): void => {
            ws.removeListener("error", onError);
            resolve({ws, socket: socket!});
        };
        ws.once("error", onError);
        ws.once("open", onOpen);
    });
}

function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

export class CoordinatorClient {
    private readonly options: CoordinatorClientOptions;
    private readonly log: Logger | undefined;
    private readonly ws: WebSocket;
    private readonly socket: Socket;
    private readonly pending = new Map<number, PendingRequest>();
    private readonly requestTimeoutMs: number;
    private readonly silenceTimeoutMs: number;
    private phase: Phase = "welcoming";
    private assignedRank = -1;
    private assignedWorldSize = 0;
    private nextId = 1;
    private heartbeatSeq = 0;
    private heartbeatTimer: NodeJS.Timeout | undefined;
    private silenceTimer: NodeJS.Timeout | undefined;
    /** The welcome deadline, then the ready deadline. */
    private joinTimer: NodeJS.Timeout | undefined;
    /** Settles connect()'s wait; undefined once settled. */
    private settleJoin: ((error?: MixzError) => void) | undefined;
    private unrefed = false;
    /** Why the connection is over, for requests made afterwards. */
    private endError: MixzError | undefined;
    private byeSent = false;

    private constructor(options: CoordinatorClientOptions, ws: WebSocket, socket: Socket) {
        this.options = options;
        this.log = options.logger;
        this.ws = ws;
        this.socket = socket;
        this.requestTimeoutMs = options.requestTimeoutMs ?? kDefaultRequestTimeoutMs;
        this.silenceTimeoutMs = options.silenceTimeoutMs ?? Math.max(5 * options.heartbeatIntervalMs, 10_000);
    }

    /** This rank, as the coordinator welcomed it. */
    get rank(): number {
        return this.assignedRank;
    }

    /** The world size the coordinator announced in its welcome. */
    get worldSize(): number {
        return this.assignedWorldSize;
    }

    /**
     * Joins the job. Rejects with MIXZ_ERR_COORDINATOR_LOST (unreachable, closed, silent), the code
     * of the coordinator's `reject` (MIXZ_ERR_PROTOCOL for a wrong token or a duplicate rank,
     * MIXZ_ERR_VERSION_MISMATCH…), MIXZ_ERR_RDZV_TIMEOUT (no `ready` within joinTimeoutMs) or
     * MIXZ_ERR_ABORTED.
     */
    static async connect(options: CoordinatorClientOptions): Promise<CoordinatorClient> {
        const log = options.logger;
        const deadline = performance.now() + options.connectTimeoutMs;
        const maxPayload = options.maxFrameBytes ?? kMaxFrameBytes;
        // Encoding validates the hello (rank, host, token…) before any socket exists.
        const hello = encodeMessage({
            kind: "hello",
            protocol: PROTOCOL_VERSION,
            token: options.token,
            jobId: options.jobId,
            rank: options.rank,
            host: options.host,
            pid: options.pid,
            mixzVersion: options.mixzVersion
        });

        let opened: {ws: WebSocket; socket: Socket} | undefined;
        let delay = kFirstRetryDelayMs;
        let attempts = 0;
        let lastDetail: string | undefined;
        for (;;) {
            attempts++;
            try {
                opened = await openSocket(options.url, deadline - performance.now(), maxPayload);
                break;
            } catch (error) {
                const code = (error as NodeJS.ErrnoException).code;
                const left = deadline - performance.now();
                const retryable = code !== undefined && kRetryableConnectErrors.has(code);
                // The last attempt's handshake timeout is the deadline itself; the reason worth
                // reporting is what made the earlier attempts fail.
                if (retryable || lastDetail === undefined) lastDetail = `${code ?? ""} ${(error as Error).message}`.trim();
                if (left <= 0) {
                    throw lostError(`cannot reach the coordinator at ${options.url} within ${options.connectTimeoutMs} ms (${attempts} attempts; last: ${lastDetail})`, {url: options.url, attempts}, error);
                }
                if (!retryable) {
                    throw lostError(`cannot connect to the coordinator at ${options.url}: ${`${code ?? ""} ${(error as Error).message}`.trim()}`, {url: options.url}, error);
                }
                log?.debug({url: options.url, code, attempts}, `coordinator not reachable yet (${lastDetail}); retrying`);
                await sleep(Math.min(delay, left));
                delay = Math.min(delay * 2, kMaxRetryDelayMs);
            }
        }
        const client = new CoordinatorClient(options, opened.ws, opened.socket);
        await client.join(hello, deadline);
        return client;
    }

    // -----------------------------------------------------------------------------------------
    // store and barrier

    /** Stores `value` under `key` (overwrites). */
    async kvSet(key: string, value: Uint8Array): Promise<void> {
        await this.request({kind: "kv_set", id: 0, key, value}, this.requestTimeoutMs, `kv_set ${JSON.stringify(key)}`);
    }

    /** The value of `key`, or null when it is not set. */
    async kvGet(key: string): Promise<Uint8Array | null> {
        const values = await this.request({kind: "kv_get", id: 0, key}, this.requestTimeoutMs, `kv_get ${JSON.stringify(key)}`);
        return values[0] ?? null;
    }

    /**
     * Waits until every key is set and returns their values in order. MIXZ_ERR_STORE_TIMEOUT names
     * the keys still missing after timeoutMs.
     */
    async kvWait(keys: readonly string[], timeoutMs: number): Promise<Uint8Array[]> {
        const values = await this.request({kind: "kv_wait", id: 0, keys: [...keys], timeoutMs}, timeoutMs + kReplyGraceMs, `kv_wait (${keys.length} keys)`);
        return values.map((value) => value ?? new Uint8Array(0));
    }

    /**
     * Waits until every rank has made its matching call to barrier `name` (the n-th call of each
     * rank meets the n-th call of the others). MIXZ_ERR_STORE_TIMEOUT names the ranks that did
     * not arrive within timeoutMs.
     */
    async barrier(name: string, timeoutMs: number): Promise<void> {
        await this.request({kind: "barrier", id: 0, name, timeoutMs}, timeoutMs + kReplyGraceMs, `barrier ${JSON.stringify(name)}`);
    }

    // -----------------------------------------------------------------------------------------
    // reports

    /**
     * Sends one step's metrics. Best effort: dropped once the connection is over (nobody listens),
     * and dropped with a warning when a field is invalid (a NaN step time must not stop training).
     */
    sendMetrics(metrics: Omit<MetricsMessage, "kind">): void {
        if (this.phase === "ended" || this.ws.readyState !== WebSocket.OPEN) return;
        let frame: Uint8Array;
        try {
            frame = encodeMessage({kind: "metrics", ...metrics} as MetricsMessage);
        } catch (error) {
            this.log?.warn({err: error}, "metrics not sent");
            return;
        }
        this.ws.send(frame);
    }

    /**
     * Tells the launcher why the script failed (long text is cut). Best effort, never rejects: it
     * resolves once the frame is flushed, or at once when the connection is already gone — a
     * failing daemon is about to exit either way, and its stderr still carries the message.
     */
    async reportFailure(message: string, stack?: string): Promise<void> {
        const frame: DaemonMessage = stack === undefined
            ? {kind: "failure", message: truncateText(message)}
            : {kind: "failure", message: truncateText(message), stack: truncateText(stack)};
        try {
            await this.flush(frame);
        } catch (error) {
            this.log?.debug({err: error}, "failure report not sent");
        }
    }

    /**
     * Says the script finished with `exitCode` (0–255; 128+n for a signal n); a disconnect after it
     * is not a loss. Stops heartbeats. Resolves once the frame is flushed to the socket.
     */
    async bye(exitCode: number): Promise<void> {
        this.byeSent = true;
        this.stopTimers();
        await this.flush({kind: "bye", exitCode});
    }

    /** Closes the connection; pending requests fail. Resolves once the socket is closed. */
    async close(): Promise<void> {
        this.end(lostError(`rank ${this.rank} closed its connection to the coordinator`), false);
        if (this.ws.readyState === WebSocket.CLOSED) return;
        await new Promise<void>((resolve) => {
            const timer = setTimeout(() => this.ws.terminate(), kCloseGraceMs);
            this.ws.once("close", () => {
                clearTimeout(timer);
                resolve();
            });
            if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000, "bye");
        });
    }

    /**
     * Lets the process exit while this connection is open: when the user's script is done, the
     * connection alone must not keep the event loop alive. Pending requests still keep it alive
     * through their own timers, so their replies are not missed.
     */
    unref(): void {
        this.unrefed = true;
        this.socket.unref();
        this.heartbeatTimer?.unref();
        this.silenceTimer?.unref();
    }

    async [Symbol.asyncDispose](): Promise<void> {
        await this.close();
    }

    // -----------------------------------------------------------------------------------------
    // joining

    /**
     * Says hello and waits for welcome (until `deadline`, the end of connectTimeoutMs), then for
     * ready (joinTimeoutMs). One frame handler serves every phase: the coordinator may send
     * welcome and ready back to back, and ws delivers both in the same tick.
     */
    private join(hello: Uint8Array, deadline: number): Promise<void> {
        const {url} = this.options;
        const joined = new Promise<void>((resolve, reject) => {
            this.settleJoin = (error) => {
                this.settleJoin = undefined;
                clearTimeout(this.joinTimer);
                this.joinTimer = undefined;
                if (error === undefined) resolve();
                else reject(error);
            };
        });
        this.ws.on("message", (data: RawData, isBinary: boolean) => this.onFrame(data, isBinary));
        this.ws.on("close", (code: number) => {
            const message = this.phase === "welcoming"
                ? `the coordinator at ${url} closed the connection before welcome (close code ${code})`
                : `lost the connection to the coordinator at ${url} (close code ${code})`;
            this.end(lostError(message, {url, closeCode: code}), true);
        });
        this.ws.on("error", (error: Error) => this.log?.warn({err: error}, "coordinator connection error"));
        this.joinTimer = setTimeout(() => {
            this.fail(lostError(`the coordinator at ${url} did not answer the hello within ${this.options.connectTimeoutMs} ms`, {url}));
        }, Math.max(1, deadline - performance.now()));
        this.ws.send(hello);
        return joined;
    }

    private onWelcome(rank: number, worldSize: number): void {
        this.assignedRank = rank;
        this.assignedWorldSize = worldSize;
        this.phase = "joining";
        this.log?.debug({rank, worldSize}, "welcomed by the coordinator; waiting for every rank");
        this.heartbeatTimer = setInterval(() => this.sendFrame({kind: "heartbeat", seq: this.heartbeatSeq++}), this.options.heartbeatIntervalMs);
        clearTimeout(this.joinTimer);
        this.joinTimer = setTimeout(() => {
            this.fail(new MixzError(
                ErrorCodes.rendezvousTimeout,
                `not every rank joined within ${this.options.joinTimeoutMs} ms (rank ${rank} of ${worldSize} waited for ready)`,
                {category: "infra", context: {rank, worldSize}}
            ));
        }, this.options.joinTimeoutMs);
    }

    // -----------------------------------------------------------------------------------------
    // frames

    private onFrame(data: RawData, isBinary: boolean): void {
        if (this.phase === "ended") return;
        this.armSilenceTimer();
        let message: CoordinatorMessage;
        try {
            message = decodeFrame(data, isBinary);
        } catch (error) {
            this.fail(lostError(`the coordinator sent a malformed frame: ${(error as Error).message}`, {}, error));
            return;
        }
        switch (message.kind) {
            case "welcome":
                if (this.phase === "welcoming") this.onWelcome(message.rank, message.worldSize);
                else this.log?.warn("a second welcome from the coordinator; ignored");
                return;
            case "reject":
                if (this.phase === "welcoming") {
                    this.fail(new MixzError(message.code, `the coordinator refused rank ${this.options.rank}: ${message.message}`, {
                        category: message.code === ErrorCodes.versionMismatch ? "platform" : "infra",
                        context: {url: this.options.url, rank: this.options.rank}
                    }));
                } else {
                    this.log?.warn({code: message.code}, `the coordinator sent reject after welcome: ${message.message}`);
                }
                return;
            case "ready":
                if (this.phase === "joining") {
                    this.phase = "ready";
                    this.settleJoin?.();
                }
                return;
            case "heartbeat_ack":
                this.options.onHeartbeatAck?.();
                return;
            case "reply":
                this.onReply(message);
                return;
            case "abort": {
                const joined = this.phase === "ready";
                const error = joined
                    ? new MixzError(ErrorCodes.aborted, `the job was aborted (${message.code}): ${message.reason}`, {category: "infra", context: {abortCode: message.code}})
                    : new MixzError(ErrorCodes.aborted, `the job was aborted (${message.code}) before every rank joined: ${message.reason}`, {category: "infra", context: {abortCode: message.code}});
                this.end(error, false);
                if (joined) this.options.onAbort(message.code, message.reason);
                return;
            }
        }
    }

    private onReply(reply: ReplyMessage): void {
        const request = this.pending.get(reply.id);
        if (request === undefined) return; // it already timed out locally
        this.pending.delete(reply.id);
        clearTimeout(request.timer);
        if (reply.ok) request.resolve(reply.values ?? []);
        else request.reject(new MixzError(reply.code, `${request.what}: ${reply.message}`, {category: "infra", context: {request: request.what}}));
    }

    private request(message: Extract<DaemonMessage, {id: number}>, timeoutMs: number, what: string): Promise<ReadonlyArray<Uint8Array | null>> {
        if (this.endError !== undefined) return Promise.reject(this.endError);
        const id = this.nextId++;
        let frame: Uint8Array;
        try {
            frame = encodeMessage({...message, id});
        } catch (error) {
            return Promise.reject(error);
        }
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.pending.delete(id);
                reject(new MixzError(ErrorCodes.storeTimeout, `${what}: the coordinator did not answer within ${timeoutMs} ms`, {category: "infra", context: {request: what}}));
            }, timeoutMs);
            this.pending.set(id, {what, resolve, reject, timer});
            this.ws.send(frame);
        });
    }

    private sendFrame(message: DaemonMessage): void {
        if (this.ws.readyState !== WebSocket.OPEN) return;
        this.ws.send(encodeMessage(message));
    }

    private flush(message: DaemonMessage): Promise<void> {
        if (this.ws.readyState !== WebSocket.OPEN) return Promise.reject(this.endError ?? lostError("the connection to the coordinator is closed"));
        let frame: Uint8Array;
        try {
            frame = encodeMessage(message);
        } catch (error) {
            return Promise.reject(error);
        }
        return new Promise((resolve, reject) => {
            this.ws.send(frame, (error) => {
                if (error === undefined || error === null) resolve();
                else reject(lostError(`cannot send ${message.kind} to the coordinator: ${error.message}`, {}, error));
            });
        });
    }

    // -----------------------------------------------------------------------------------------
    // ending

    /** Restarts the silence deadline: any frame from the coordinator proves it is alive. */
    private armSilenceTimer(): void {
        clearTimeout(this.silenceTimer);
        this.silenceTimer = undefined;
        if (this.phase === "ended" || this.byeSent) return;
        this.silenceTimer = setTimeout(() => {
            this.fail(lostError(`the coordinator at ${this.options.url} sent nothing for ${this.silenceTimeoutMs} ms`, {url: this.options.url}));
        }, this.silenceTimeoutMs);
        if (this.unrefed) this.silenceTimer.unref();
    }

    private stopTimers(): void {
        clearInterval(this.heartbeatTimer);
        clearTimeout(this.silenceTimer);
        this.heartbeatTimer = undefined;
        this.silenceTimer = undefined;
    }

    /** Ends the connection because of `error` and cuts the socket. */
    private fail(error: MixzError): void {
        this.end(error, true);
        this.ws.terminate();
    }

    /**
     * The connection is over (lost, aborted, refused, closed): stop timers, fail pending requests
     * with `error`, and report it — to connect() while joining, else to onLost when it is a loss
     * and no bye was said.
     */
    private end(error: MixzError, isLoss: boolean): void {
        if (this.phase === "ended") return;
        const wasReady = this.phase === "ready";
        this.phase = "ended";
        this.endError = error;
        this.stopTimers();
        for (const request of this.pending.values()) {
            clearTimeout(request.timer);
            request.reject(error);
        }
        this.pending.clear();
        if (this.settleJoin !== undefined) {
            this.settleJoin(error);
            // connect() rejects: nobody will hold this client to close it.
            this.ws.terminate();
        } else if (wasReady && isLoss && !this.byeSent) {
            this.log?.error({err: error}, error.message);
            this.options.onLost(error);
        }
    }
}

function decodeFrame(data: RawData, isBinary: boolean): CoordinatorMessage {
    if (!isBinary) throw new MixzError(ErrorCodes.protocol, "a text frame (the protocol is binary msgpack)", {category: "infra"});
    const frame = Array.isArray(data) ? Buffer.concat(data) : data instanceof ArrayBuffer ? new Uint8Array(data) : data;
    return decodeCoordinatorMessage(frame);
}

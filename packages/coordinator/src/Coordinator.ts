/**
 * The job coordinator: a WebSocket server in the launcher process that every rank daemon joins.
 *
 * Vocabulary:
 * - a *connection* is one accepted WebSocket; it starts *unjoined* and must send `hello` within
 *   helloTimeoutMs. A refused connection is *rejected*: it gets a `reject` frame, is closed with
 *   1008 (policy violation), logged at warn and reported as a `rejected` event, and nothing else
 *   about the job changes.
 * - a *rank session* is what a successful hello creates. A rank joins at most once per job: its
 *   session outlives its connection, so a hello for it on another connection (a replay, a
 *   restarted daemon) is refused while the original connection is left alone. A hello repeated on
 *   the rank's own connection is refused too, and since that connection is then closed, the rank
 *   is lost: a daemon never says hello twice, so one that does is broken.
 * - a rank session is *active* until it says `bye` or is *lost* (heartbeat deadline, or a
 *   disconnect without bye). Each rank is reported lost at most once.
 *
 * abort() broadcasts `abort`, fails every pending wait, and from then on answers store requests and
 * hellos with errors; connections stay open until close(), which ends everything. Every wait —
 * hello, join, kv_wait, barrier, close handshake — has its own timer, and close() clears them all.
 *
 * Liveness is the daemons' heartbeats, not ws ping/pong: the daemon heartbeats from its main JS
 * thread, so a script stuck in a synchronous loop stops heartbeating and is caught, whereas ws
 * answers pings from the socket layer, which keeps working while the script hangs. Any frame from a
 * rank counts as a sign of life.
 *
 * Frames are checked by @mixz/protocol's decoder. An unjoined connection that sends anything but a
 * valid hello is rejected; a joined rank that sends garbage, a text frame or an oversized frame is
 * broken, so its connection is closed (1002 protocol error, 1009 from ws for size) and it is lost.
 */
import {createHash, timingSafeEqual} from "node:crypto";
import {createServer, type IncomingMessage, type Server, type ServerResponse} from "node:http";
import type {AddressInfo, Socket} from "node:net";
import type {Duplex} from "node:stream";
import {
    decodeDaemonMessage,
    encodeMessage,
    ErrorCodes,
    kMaxFrameBytes,
    kMaxNameChars,
    MixzError,
    PROTOCOL_VERSION,
    truncateText,
    type CoordinatorMessage,
    type DaemonMessage,
    type HelloMessage,
    type ReplyMessage
} from "@mixz/protocol";
import type {Logger} from "@mixz/log";
import {WebSocket, WebSocketServer, type RawData} from "ws";
import type {CoordinatorEvent, CoordinatorOptions, PlannedRank} from "./api.js";
import {BarrierTable} from "./BarrierTable.js";
import {KvStore, listSome, type WaitOutcome} from "./KvStore.js";

const kDefaultHelloTimeoutMs = 10_000;
/** How long a connection we close may take to finish the close handshake before it is cut. */
const kCloseLingerMs = 1000;
/** ws close codes (RFC 6455 §7.4.1). */
const kCloseGoingAway = 1001;
const kCloseProtocolError = 1002;
const kClosePolicyViolation = 1008;

interface Connection {
    readonly ws: WebSocket;
    readonly remote: string;
    helloTimer: NodeJS.Timeout | undefined;
    lingerTimer: NodeJS.Timeout | undefined;
    /** Set by a successful hello. */
    session: RankSession | undefined;
    closing: boolean;
}

interface RankSession {
    readonly rank: number;
    readonly host: string;
    readonly pid: number;
    readonly connection: Connection;
    state: "active" | "bye" | "lost";
    connected: boolean;
    lastSeenMs: number;
    /** Cancels this rank's pending kv waits and barrier waits (its connection is gone). */
    readonly cancels: Set<() => void>;
}

/** Compares secrets in constant time; hashing first gives equal lengths without leaking them. */
function tokensEqual(given: string, expected: string): boolean {
    const digest = (text: string): Buffer => createHash("sha256").update(text, "utf8").digest();
    return timingSafeEqual(digest(given), digest(expected));
}

function formatHostPort(host: string, port: number): string {
    return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function remoteOf(socket: {remoteAddress?: string | undefined; remotePort?: number | undefined}): string {
    return socket.remoteAddress === undefined ? "unknown peer" : formatHostPort(socket.remoteAddress, socket.remotePort ?? 0);
}

function positive(value: number, name: string): void {
    if (!(Number.isFinite(value) && value > 0)) {
        throw new MixzError(ErrorCodes.usage, `${name} must be a positive number of milliseconds, got ${value}`, {category: "user", context: {[name]: value}});
    }
}

/** Validates options at the edge (house rule 2) and fills defaults. */
function resolveOptions(options: CoordinatorOptions): Required<Omit<CoordinatorOptions, "mixzVersion">> & Pick<CoordinatorOptions, "mixzVersion"> {
    const {ranks} = options;
    if (ranks.length === 0) throw new MixzError(ErrorCodes.emptyWorld, "the coordinator needs at least one rank", {category: "user"});
    const seen = new Set<number>();
    for (const {rank} of ranks) {
        if (!Number.isInteger(rank) || rank < 0 || rank >= ranks.length || seen.has(rank)) {
            throw new MixzError(ErrorCodes.usage, `the plan's ranks must be 0..${ranks.length - 1}, each once; got rank ${rank}`, {category: "platform"});
        }
        seen.add(rank);
    }
    if (options.token.length === 0) throw new MixzError(ErrorCodes.usage, "the job token must not be empty", {category: "platform"});
    if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
        throw new MixzError(ErrorCodes.usage, `--master-port must be an integer in [0, 65535], got ${options.port}`, {category: "user", context: {port: options.port}});
    }
    positive(options.joinTimeoutMs, "joinTimeoutMs");
    positive(options.heartbeatIntervalMs, "heartbeatIntervalMs");
    if (!Number.isInteger(options.heartbeatMisses) || options.heartbeatMisses < 1) {
        throw new MixzError(ErrorCodes.usage, `heartbeatMisses must be an integer ≥ 1, got ${options.heartbeatMisses}`, {category: "user"});
    }
    const helloTimeoutMs = options.helloTimeoutMs ?? kDefaultHelloTimeoutMs;
    positive(helloTimeoutMs, "helloTimeoutMs");
    const maxFrameBytes = options.maxFrameBytes ?? kMaxFrameBytes;
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 1024) {
        throw new MixzError(ErrorCodes.usage, `maxFrameBytes must be an integer ≥ 1024, got ${maxFrameBytes}`, {category: "platform"});
    }
    return {...options, helloTimeoutMs, maxFrameBytes};
}

/** Turns a listen() failure into an error that names the address and what to do. */
function listenError(error: NodeJS.ErrnoException, host: string, port: number): MixzError {
    const where = formatHostPort(host, port);
    const context = {host, port, errno: error.code};
    switch (error.code) {
        case "EADDRINUSE":
            return new MixzError(ErrorCodes.addressInUse, `cannot listen on ${where}: address already in use; pick another --master-port or 0 for a free one`, {category: "user", context, cause: error});
        case "EADDRNOTAVAIL":
            return new MixzError(ErrorCodes.addressInUse, `cannot listen on ${where}: ${host} is not an address of this machine; pass a local address as --master-addr (or 0.0.0.0 for every interface)`, {category: "user", context, cause: error});
        case "EACCES":
        case "EPERM":
            return new MixzError(ErrorCodes.addressInUse, `cannot listen on ${where}: permission denied (ports below 1024 need privileges); pick another --master-port or 0 for a free one`, {category: "user", context, cause: error});
        case "ENOTFOUND":
        case "EAI_AGAIN":
        case "EAI_FAIL":
            return new MixzError(ErrorCodes.addressInUse, `cannot listen on ${where}: the host name ${host} does not resolve (${error.code}); pass an IP address or a resolvable name as --master-addr`, {category: "user", context, cause: error});
        default:
            return new MixzError(ErrorCodes.addressInUse, `cannot listen on ${where}: ${error.code ?? ""} ${error.message}`.replace(/\s+/g, " "), {category: "infra", context, cause: error});
    }
}

export class Coordinator {
    /** The port actually listened on (the one picked when the options said 0). */
    readonly port: number;
    /** ws://host:port/ */
    readonly url: string;

    private readonly options: ReturnType<typeof resolveOptions>;
    private readonly log: Logger;
    private readonly hostOfRank: ReadonlyMap<number, string>;
    private readonly worldSize: number;
    private readonly server: Server;
    private readonly wss: WebSocketServer;
    private readonly store = new KvStore();
    private readonly barriers: BarrierTable;
    private readonly sessions = new Map<number, RankSession>();
    private readonly connections = new Set<Connection>();
    /** TCP connections that have not upgraded yet, with the timer that cuts them if they never do. */
    private readonly rawSockets = new Map<Socket, NodeJS.Timeout | undefined>();
    private joinTimer: NodeJS.Timeout | undefined;
    private heartbeatChecker: NodeJS.Timeout | undefined;
    /** The heartbeat checker runs twice per interval, so a loss is seen within half an interval of its deadline. */
    private readonly checkPeriodMs: number;
    private lastCheckMs = 0;
    private ready = false;
    private joinExpired = false;
    private aborted: {readonly code: string; readonly reason: string} | undefined;
    private closing: Promise<void> | undefined;

    private constructor(options: ReturnType<typeof resolveOptions>, server: Server, wss: WebSocketServer, port: number) {
        this.options = options;
        this.log = options.logger;
        this.server = server;
        this.wss = wss;
        this.port = port;
        this.url = `ws://${formatHostPort(options.host, port)}/`;
        this.worldSize = options.ranks.length;
        this.hostOfRank = new Map(options.ranks.map(({rank, host}) => [rank, host]));
        this.checkPeriodMs = Math.max(1, options.heartbeatIntervalMs / 2);
        this.barriers = new BarrierTable(this.worldSize, (rank) => `rank ${rank} (host ${this.hostOfRank.get(rank) ?? "?"})`);
    }

    /**
     * Listens and starts the join clock. Rejects with MIXZ_ERR_ADDRESS_IN_USE (naming host:port)
     * when the address cannot be bound.
     */
    static async start(options: CoordinatorOptions): Promise<Coordinator> {
        const resolved = resolveOptions(options);
        // Our own HTTP server rather than ws's: plain requests, parse errors and slow upgrades
        // must be answered and logged, not left hanging.
        const server = createServer();
        const wss = new WebSocketServer({
            noServer: true,
            maxPayload: resolved.maxFrameBytes,
            perMessageDeflate: false,
            clientTracking: false
        });
        await new Promise<void>((resolve, reject) => {
            const onError = (error: NodeJS.ErrnoException): void => {
                server.removeListener("listening", onListening);
                reject(listenError(error, resolved.host, resolved.port));
            };
            const onListening = (): void => {
                server.removeListener("error", onError);
                resolve();
            };
            server.once("error", onError);
            server.once("listening", onListening);
            server.listen({host: resolved.host, port: resolved.port});
        });
        const port = (server.address() as AddressInfo).port;
        const coordinator = new Coordinator(resolved, server, wss, port);
        coordinator.attach();
        coordinator.log.info({url: coordinator.url, worldSize: coordinator.worldSize}, `coordinator listening on ${coordinator.url}, waiting for ${coordinator.worldSize} ranks`);
        return coordinator;
    }

    /** Ranks that have joined so far (lost or finished ones included), ascending. */
    joinedRanks(): number[] {
        return [...this.sessions.keys()].sort((a, b) => a - b);
    }

    /**
     * Ends the job's services: broadcasts `abort` to every connected rank, fails every pending
     * kv_wait and barrier with MIXZ_ERR_ABORTED, and answers later store requests and hellos with
     * errors. Sockets stay open (heartbeats are still answered) until close(). Idempotent.
     */
    abort(code: string, reason: string): void {
        if (this.closing !== undefined || this.aborted !== undefined) return;
        // The reason may carry a rank's last stderr lines: cut it to what an abort frame may hold.
        reason = truncateText(reason);
        code = code.length > 0 && code.length <= kMaxNameChars ? code : ErrorCodes.aborted;
        this.aborted = {code, reason};
        this.log.info({code}, `aborting the job: ${reason}`);
        // Ranks told to stop stop heartbeating, and late joins no longer matter: neither the
        // heartbeat check nor the join deadline has news any more. Disconnects are still reported.
        clearInterval(this.heartbeatChecker);
        clearTimeout(this.joinTimer);
        this.heartbeatChecker = undefined;
        this.joinTimer = undefined;
        for (const session of this.sessions.values()) {
            if (session.connected) this.send(session.connection, {kind: "abort", code, reason});
        }
        this.failWaits(`the job was aborted (${code}): ${reason}`);
    }

    /** Closes every connection and the server; clears every timer. Idempotent. */
    close(): Promise<void> {
        this.closing ??= this.shutdown();
        return this.closing;
    }

    async [Symbol.asyncDispose](): Promise<void> {
        await this.close();
    }

    // -----------------------------------------------------------------------------------------
    // wiring

    private attach(): void {
        const {helloTimeoutMs} = this.options;
        this.server.on("connection", (socket: Socket) => {
            // A TCP connection that never upgrades (a port scanner, a slowloris) is cut after the
            // hello timeout; node's own headersTimeout is checked far too rarely to rely on.
            const timer = setTimeout(() => {
                this.rawSockets.delete(socket);
                this.refuse(remoteOf(socket), `no WebSocket upgrade within ${helloTimeoutMs} ms`);
                socket.destroy();
            }, helloTimeoutMs);
            this.rawSockets.set(socket, timer);
            socket.once("close", () => {
                clearTimeout(this.rawSockets.get(socket));
                this.rawSockets.delete(socket);
            });
        });
        this.server.on("request", (request: IncomingMessage, response: ServerResponse) => {
            this.refuse(remoteOf(request.socket), `plain HTTP ${request.method ?? "?"} request (WebSocket only)`);
            response.writeHead(426, {"Content-Type": "text/plain", Connection: "close", Upgrade: "websocket"});
            response.end("mixz coordinator: WebSocket connections only\n");
        });
        this.server.on("clientError", (error: NodeJS.ErrnoException, socket: Duplex) => {
            // A reset by the peer is not a request we could answer or a rejection worth reporting.
            if (error.code !== "ECONNRESET") {
                this.refuse(remoteOf(socket as Socket), `not an HTTP request (${error.code ?? error.message})`);
                if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
            }
            socket.destroy();
        });
        this.wss.on("wsClientError", (error: Error, socket: Duplex, request: IncomingMessage) => {
            this.refuse(remoteOf(request.socket), `bad WebSocket handshake: ${error.message}`);
            if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
            socket.destroy();
        });
        this.server.on("upgrade", (request: IncomingMessage, socket: Duplex, head: Buffer) => {
            const raw = request.socket;
            clearTimeout(this.rawSockets.get(raw));
            this.rawSockets.delete(raw);
            if (this.closing !== undefined) {
                socket.destroy();
                return;
            }
            this.wss.handleUpgrade(request, socket, head, (ws) => this.onConnection(ws, remoteOf(raw)));
        });

        this.joinTimer = setTimeout(() => this.onJoinTimeout(), this.options.joinTimeoutMs);
        this.lastCheckMs = performance.now();
        this.heartbeatChecker = setInterval(() => this.checkHeartbeats(), this.checkPeriodMs);
    }

    private onConnection(ws: WebSocket, remote: string): void {
        const connection: Connection = {ws, remote, helloTimer: undefined, lingerTimer: undefined, session: undefined, closing: false};
        this.connections.add(connection);
        this.log.debug({remote}, "connection opened");
        connection.helloTimer = setTimeout(() => {
            connection.helloTimer = undefined;
            this.reject(connection, ErrorCodes.protocol, `no hello within ${this.options.helloTimeoutMs} ms`);
        }, this.options.helloTimeoutMs);
        ws.on("message", (data: RawData, isBinary: boolean) => this.onFrame(connection, data, isBinary));
        // Without an error listener a bad frame would crash the launcher. ws reports oversized
        // frames (WS_ERR_UNSUPPORTED_MESSAGE_LENGTH, closed with 1009) and framing violations here,
        // then closes the socket itself.
        ws.on("error", (error: Error & {code?: string}) => {
            if (connection.session === undefined) {
                this.refuse(remote, `bad frame: ${error.message} (${error.code ?? "ws error"})`);
            } else {
                this.log.warn({remote, rank: connection.session.rank, wsCode: error.code}, `rank ${connection.session.rank}: bad frame (${error.message}); closing its connection`);
            }
        });
        ws.on("close", (code: number) => this.onClose(connection, code));
    }

    // -----------------------------------------------------------------------------------------
    // frames

    private onFrame(connection: Connection, data: RawData, isBinary: boolean): void {
        if (connection.closing) return;
        const session = connection.session;
        if (session !== undefined) session.lastSeenMs = performance.now();
        if (!isBinary) {
            this.protocolViolation(connection, "a text frame (the protocol is binary msgpack)");
            return;
        }
        // With the default binaryType and no fragmentation surprises ws hands over one Buffer;
        // concatenate defensively if it ever hands over fragments.
        const frame = Array.isArray(data) ? Buffer.concat(data) : data instanceof ArrayBuffer ? new Uint8Array(data) : data;
        let message: DaemonMessage;
        try {
            message = decodeDaemonMessage(frame);
        } catch (error) {
            this.protocolViolation(connection, error instanceof Error ? error.message : String(error));
            return;
        }
        if (session === undefined) this.onHello(connection, message);
        else this.onRankMessage(session, message);
    }

    /** Garbage from an unjoined connection is a rejection; from a joined rank it is a broken rank. */
    private protocolViolation(connection: Connection, what: string): void {
        const session = connection.session;
        if (session === undefined) {
            this.reject(connection, ErrorCodes.protocol, `malformed first frame: ${what}`);
            return;
        }
        this.log.warn({remote: connection.remote, rank: session.rank}, `rank ${session.rank} (host ${session.host}) sent a malformed frame: ${what}; closing its connection`);
        this.closeConnection(connection, kCloseProtocolError, "malformed frame");
    }

    private onHello(connection: Connection, message: DaemonMessage): void {
        if (message.kind !== "hello") {
            this.reject(connection, ErrorCodes.protocol, `the first frame must be hello, got ${message.kind}`);
            return;
        }
        const refusal = this.checkHello(message);
        if (refusal !== undefined) {
            this.reject(connection, refusal.code, refusal.message);
            return;
        }
        clearTimeout(connection.helloTimer);
        connection.helloTimer = undefined;
        const session: RankSession = {
            rank: message.rank,
            host: message.host,
            pid: message.pid,
            connection,
            state: "active",
            connected: true,
            lastSeenMs: performance.now(),
            cancels: new Set()
        };
        connection.session = session;
        this.sessions.set(message.rank, session);
        this.send(connection, {kind: "welcome", rank: message.rank, worldSize: this.worldSize});
        this.log.info({rank: message.rank, host: message.host, pid: message.pid, remote: connection.remote}, `rank ${message.rank} joined from ${message.host} (pid ${message.pid}); ${this.sessions.size}/${this.worldSize}`);
        this.emit({type: "joined", rank: message.rank, host: message.host, pid: message.pid});
        if (this.sessions.size === this.worldSize) this.onAllJoined();
    }

    /** Why a hello is refused, or undefined when it is accepted. */
    private checkHello(hello: HelloMessage): {code: string; message: string} | undefined {
        if (this.aborted !== undefined) return {code: ErrorCodes.aborted, message: `the job was aborted: ${this.aborted.reason}`};
        if (this.joinExpired) return {code: ErrorCodes.rendezvousTimeout, message: `the join deadline (${this.options.joinTimeoutMs} ms) has passed`};
        if (hello.protocol !== PROTOCOL_VERSION) {
            return {code: ErrorCodes.protocol, message: `protocol version mismatch: the daemon speaks mixz protocol ${hello.protocol}, the coordinator speaks ${PROTOCOL_VERSION}`};
        }
        if (!tokensEqual(hello.token, this.options.token)) return {code: ErrorCodes.protocol, message: "wrong job token"};
        if (hello.jobId !== this.options.jobId) {
            return {code: ErrorCodes.protocol, message: `job id ${JSON.stringify(hello.jobId)} is not this job's (${JSON.stringify(this.options.jobId)})`};
        }
        const plannedHost = this.hostOfRank.get(hello.rank);
        if (plannedHost === undefined) return {code: ErrorCodes.protocol, message: `rank ${hello.rank} is not in the plan (world size ${this.worldSize})`};
        if (plannedHost !== hello.host) {
            return {code: ErrorCodes.protocol, message: `rank ${hello.rank} belongs to host ${plannedHost} in the plan, but says it runs on ${hello.host}`};
        }
        const existing = this.sessions.get(hello.rank);
        if (existing !== undefined) {
            return {code: ErrorCodes.protocol, message: `rank ${hello.rank} already joined from host ${existing.host} (pid ${existing.pid})`};
        }
        if (this.options.mixzVersion !== undefined && hello.mixzVersion !== this.options.mixzVersion) {
            return {
                code: ErrorCodes.versionMismatch,
                message: `rank ${hello.rank} on ${hello.host} runs mixz ${hello.mixzVersion}, the launcher runs ${this.options.mixzVersion}; install the same version on every host`
            };
        }
        return undefined;
    }

    private onAllJoined(): void {
        this.ready = true;
        clearTimeout(this.joinTimer);
        this.joinTimer = undefined;
        this.log.info(`all ${this.worldSize} ranks joined`);
        for (const session of this.sessions.values()) {
            if (session.connected) this.send(session.connection, {kind: "ready"});
        }
        this.emit({type: "ready"});
    }

    private onJoinTimeout(): void {
        this.joinTimer = undefined;
        if (this.ready || this.closing !== undefined) return;
        this.joinExpired = true;
        const missing = this.options.ranks.filter(({rank}) => !this.sessions.has(rank)).sort((a, b) => a.rank - b.rank);
        this.log.error(
            {missing},
            `not every rank joined within ${this.options.joinTimeoutMs} ms: ${missing.length} of ${this.worldSize} never arrived: ${listSome(missing.map(({rank, host}) => `rank ${rank} (host ${host})`))}`
        );
        this.emit({type: "join_timeout", missing});
    }

    private onRankMessage(session: RankSession, message: DaemonMessage): void {
        const connection = session.connection;
        switch (message.kind) {
            case "hello":
                // A legitimate daemon never says hello twice: whoever does is broken or replaying.
                this.reject(connection, ErrorCodes.protocol, `rank ${session.rank} already joined from host ${session.host} (pid ${session.pid})`);
                return;
            case "heartbeat":
                this.send(connection, {kind: "heartbeat_ack", seq: message.seq});
                return;
            case "kv_set":
                if (this.refuseIfAborted(session, message.id)) return;
                this.store.set(message.key, message.value);
                this.send(connection, {kind: "reply", id: message.id, ok: true});
                return;
            case "kv_get": {
                if (this.refuseIfAborted(session, message.id)) return;
                const value = this.store.get(message.key);
                this.sendReply(connection, {kind: "reply", id: message.id, ok: true, values: [value ?? null]});
                return;
            }
            case "kv_wait":
                if (this.refuseIfAborted(session, message.id)) return;
                this.track(session, message.id, (done) => this.store.wait(message.keys, message.timeoutMs, done), true);
                return;
            case "barrier":
                if (this.refuseIfAborted(session, message.id)) return;
                this.track(session, message.id, (done) => this.barriers.arrive(message.name, session.rank, message.timeoutMs, done), false);
                return;
            case "metrics":
                this.emit({type: "metrics", rank: session.rank, metrics: message});
                return;
            case "failure":
                this.log.warn({rank: session.rank, host: session.host}, `rank ${session.rank} (host ${session.host}) reported a failure: ${message.message}`);
                this.emit(message.stack === undefined
                    ? {type: "failure", rank: session.rank, message: message.message}
                    : {type: "failure", rank: session.rank, message: message.message, stack: message.stack});
                return;
            case "bye":
                if (session.state === "active") session.state = "bye";
                this.log.info({rank: session.rank, exitCode: message.exitCode}, `rank ${session.rank} said bye (exit code ${message.exitCode})`);
                this.barriers.rankDeparted(session.rank, `has finished (exit code ${message.exitCode})`);
                this.emit({type: "bye", rank: session.rank, exitCode: message.exitCode});
                return;
        }
    }

    /** Answers a store request with an error once the job is aborted. */
    private refuseIfAborted(session: RankSession, id: number): boolean {
        if (this.aborted === undefined) return false;
        this.send(session.connection, {kind: "reply", id, ok: false, code: ErrorCodes.aborted, message: `the job was aborted (${this.aborted.code}): ${this.aborted.reason}`});
        return true;
    }

    /**
     * Starts a wait for `session` and answers request `id` when it ends; the wait is cancelled if
     * the rank's connection goes away first.
     */
    private track(session: RankSession, id: number, start: (done: (outcome: WaitOutcome) => void) => () => void, withValues: boolean): void {
        let cancel: (() => void) | undefined;
        let settled = false;
        const done = (outcome: WaitOutcome): void => {
            settled = true;
            if (cancel !== undefined) session.cancels.delete(cancel);
            if (!session.connected) return;
            this.sendReply(session.connection, outcome.ok
                ? withValues ? {kind: "reply", id, ok: true, values: outcome.values} : {kind: "reply", id, ok: true}
                : {kind: "reply", id, ok: false, code: outcome.code, message: outcome.message});
        };
        cancel = start(done);
        if (!settled) session.cancels.add(cancel);
    }

    private failWaits(message: string): void {
        this.store.failAll(ErrorCodes.aborted, message);
        this.barriers.failAll(ErrorCodes.aborted, message);
    }

    // -----------------------------------------------------------------------------------------
    // liveness

    private checkHeartbeats(): void {
        const deadlineMs = this.options.heartbeatIntervalMs * this.options.heartbeatMisses;
        const now = performance.now();
        const sinceLastCheck = now - this.lastCheckMs;
        this.lastCheckMs = now;
        // When this process itself was stalled (swapping, SIGSTOP, a long GC), the heartbeats
        // that arrived meanwhile still wait in the socket buffers, unread: every rank would look
        // silent. Skip one round so they are read first; detection is late by one period at most.
        if (sinceLastCheck > 2 * this.checkPeriodMs) return;
        for (const session of this.sessions.values()) {
            if (session.state !== "active") continue;
            const silentMs = now - session.lastSeenMs;
            if (silentMs > deadlineMs) {
                session.state = "lost";
                this.log.error(
                    {rank: session.rank, host: session.host, silentMs: Math.round(silentMs)},
                    `rank ${session.rank} (host ${session.host}, pid ${session.pid}) missed its heartbeats: nothing received for ${Math.round(silentMs)} ms (limit ${deadlineMs} ms)`
                );
                this.barriers.rankDeparted(session.rank, "was lost (missed heartbeats)");
                this.emit({type: "lost", rank: session.rank, host: session.host, reason: "heartbeat"});
            }
        }
    }

    private onClose(connection: Connection, code: number): void {
        this.connections.delete(connection);
        clearTimeout(connection.helloTimer);
        clearTimeout(connection.lingerTimer);
        connection.helloTimer = undefined;
        connection.lingerTimer = undefined;
        const session = connection.session;
        if (session === undefined) {
            this.log.debug({remote: connection.remote, code}, "unjoined connection closed");
            return;
        }
        session.connected = false;
        for (const cancel of session.cancels) cancel();
        session.cancels.clear();
        if (session.state === "active" && this.closing === undefined) {
            session.state = "lost";
            // Usually the rank's process is exiting (process.exit skips bye); only its exit status,
            // which the launcher sees, says whether that was a failure.
            this.log.debug({rank: session.rank, host: session.host, code}, `rank ${session.rank} (host ${session.host}, pid ${session.pid}) disconnected without bye (close code ${code})`);
            this.barriers.rankDeparted(session.rank, "has disconnected");
            this.emit({type: "lost", rank: session.rank, host: session.host, reason: "disconnected"});
        } else {
            this.log.debug({rank: session.rank, code}, `rank ${session.rank} disconnected`);
        }
    }

    // -----------------------------------------------------------------------------------------
    // helpers

    /** Refuses a connection: reject frame, close 1008, warn, `rejected` event. */
    private reject(connection: Connection, code: string, message: string): void {
        if (connection.closing) return;
        clearTimeout(connection.helloTimer);
        connection.helloTimer = undefined;
        this.refuse(connection.remote, message, code);
        this.send(connection, {kind: "reject", code, message});
        this.closeConnection(connection, kClosePolicyViolation, "rejected");
    }

    /** Logs and reports a refused peer (connection, HTTP request or raw TCP). */
    private refuse(remote: string, message: string, code: string = ErrorCodes.protocol): void {
        this.log.warn({remote, code}, `rejected connection from ${remote}: ${message}`);
        this.emit({type: "rejected", remote, code, message});
    }

    /** Starts the close handshake and cuts the socket if the peer does not finish it promptly. */
    private closeConnection(connection: Connection, code: number, reason: string): void {
        if (connection.closing) return;
        connection.closing = true;
        connection.ws.close(code, reason);
        connection.lingerTimer = setTimeout(() => connection.ws.terminate(), kCloseLingerMs);
    }

    private send(connection: Connection, message: CoordinatorMessage): void {
        if (connection.closing || connection.ws.readyState !== WebSocket.OPEN) return;
        connection.ws.send(encodeMessage(message));
    }

    /**
     * Sends a reply, or an error in its place when the values would not fit in one frame (the
     * daemon's ws would close the connection on it): several large values waited for at once can
     * exceed the limit although each was accepted on its own.
     */
    private sendReply(connection: Connection, reply: ReplyMessage): void {
        if (connection.closing || connection.ws.readyState !== WebSocket.OPEN) return;
        const frame = encodeMessage(reply);
        if (frame.byteLength <= this.options.maxFrameBytes) {
            connection.ws.send(frame);
            return;
        }
        this.send(connection, {
            kind: "reply",
            id: reply.id,
            ok: false,
            code: ErrorCodes.protocol,
            message: `the reply would be ${frame.byteLength} bytes, above the frame limit of ${this.options.maxFrameBytes} bytes; ask for fewer or smaller values at once`
        });
    }

    private emit(event: CoordinatorEvent): void {
        if (this.closing !== undefined) return;
        try {
            this.options.onEvent(event);
        } catch (error) {
            this.log.error({err: error, event: event.type}, "coordinator event handler threw");
        }
    }

    private async shutdown(): Promise<void> {
        clearTimeout(this.joinTimer);
        clearInterval(this.heartbeatChecker);
        this.joinTimer = undefined;
        this.heartbeatChecker = undefined;
        // Waiting ranks get an answer rather than their own timeouts.
        this.failWaits("the coordinator is shutting down");
        for (const [socket, timer] of this.rawSockets) {
            clearTimeout(timer);
            socket.destroy();
        }
        this.rawSockets.clear();
        const closed = [...this.connections].map(
            (connection) =>
                new Promise<void>((resolve) => {
                    if (connection.ws.readyState === WebSocket.CLOSED) {
                        resolve();
                        return;
                    }
                    connection.ws.once("close", () => resolve());
                    this.closeConnection(connection, kCloseGoingAway, "coordinator closing");
                })
        );
        await Promise.all(closed);
        await new Promise<void>((resolve) => {
            this.server.close(() => resolve());
            this.server.closeAllConnections();
        });
        this.log.debug("coordinator closed");
    }
}

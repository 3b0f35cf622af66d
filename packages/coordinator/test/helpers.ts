/**
 * Shared fixtures of the coordinator tests: a coordinator on 127.0.0.1 port 0 whose events and log
 * lines are recorded, real clients, and a raw ws client that speaks the protocol by hand (to stop
 * heartbeating, replay frames, or send garbage).
 */
import assert from "node:assert/strict";
import {randomBytes} from "node:crypto";
import {
    decodeCoordinatorMessage,
    encodeMessage,
    PROTOCOL_VERSION,
    type CoordinatorMessage,
    type DaemonMessage,
    type HelloMessage
} from "@mixz/protocol";
import {pino, type Logger} from "pino";
import {WebSocket, type RawData} from "ws";
import {Coordinator, CoordinatorClient, type CoordinatorClientOptions, type CoordinatorEvent, type CoordinatorOptions} from "@mixz/coordinator";

/** Generous bound for anything that should happen "promptly" on a loaded 2-core machine. */
export const kPrompt = 5000;

export interface LogLine {
    readonly level: number;
    readonly msg: string;
    readonly [key: string]: unknown;
}

/** A pino logger that keeps its lines in memory (level 40 = warn). */
export function memoryLogger(): {logger: Logger; lines: LogLine[]} {
    const lines: LogLine[] = [];
    const logger = pino({level: "debug"}, {write: (line: string) => void lines.push(JSON.parse(line) as LogLine)});
    return {logger, lines};
}

/** Resolves when `predicate` holds, polling; fails with `what` after timeoutMs. */
export async function until(predicate: () => boolean, what: string, timeoutMs = kPrompt): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
        if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((resolve) => setTimeout(resolve, 10));
    }
}

export interface TestCoordinator {
    readonly coordinator: Coordinator;
    readonly events: CoordinatorEvent[];
    readonly logs: LogLine[];
    readonly options: CoordinatorOptions;
    /** The first recorded event matching `predicate` (waits for it). */
    event<T extends CoordinatorEvent["type"]>(type: T, predicate?: (event: Extract<CoordinatorEvent, {type: T}>) => boolean, timeoutMs?: number): Promise<Extract<CoordinatorEvent, {type: T}>>;
    eventsOf<T extends CoordinatorEvent["type"]>(type: T): Array<Extract<CoordinatorEvent, {type: T}>>;
    client(rank: number, overrides?: Partial<CoordinatorClientOptions>): Promise<CoordinatorClient>;
    clientOptions(rank: number, overrides?: Partial<CoordinatorClientOptions>): CoordinatorClientOptions;
    hello(rank: number, overrides?: Partial<HelloMessage>): HelloMessage;
}

/** Hosts of the default plan: two ranks per host, as a 2-node job would have. */
export function planOf(world: number): Array<{rank: number; host: string}> {
    return Array.from({length: world}, (_, rank) => ({rank, host: `node-${Math.floor(rank / 2)}`}));
}

export async function startCoordinator(world: number, overrides: Partial<CoordinatorOptions> = {}): Promise<TestCoordinator> {
    const events: CoordinatorEvent[] = [];
    const {logger, lines} = memoryLogger();
    const options: CoordinatorOptions = {
        host: "127.0.0.1",
        port: 0,
        token: randomBytes(16).toString("hex"),
        jobId: "job-test",
        ranks: planOf(world),
        joinTimeoutMs: 60_000,
        heartbeatIntervalMs: 100,
        // Generous: only the heartbeat tests want a loss, and a loaded machine stalls event loops.
        heartbeatMisses: 30,
        helloTimeoutMs: 2000,
        logger,
        onEvent: (event) => events.push(event),
        ...overrides
    };
    const coordinator = await Coordinator.start(options);
    const clientOptions = (rank: number, more: Partial<CoordinatorClientOptions> = {}): CoordinatorClientOptions => ({
        url: coordinator.url,
        token: options.token,
        jobId: options.jobId,
        rank,
        host: options.ranks.find((r) => r.rank === rank)?.host ?? "nowhere",
        pid: 1000 + rank,
        mixzVersion: "0.1.0",
        connectTimeoutMs: kPrompt,
        joinTimeoutMs: 20_000,
        heartbeatIntervalMs: options.heartbeatIntervalMs,
        onAbort: () => {},
        onLost: () => {},
        ...more
    });
    const eventsOf = <T extends CoordinatorEvent["type"]>(type: T): Array<Extract<CoordinatorEvent, {type: T}>> =>
        events.filter((e): e is Extract<CoordinatorEvent, {type: T}> => e.type === type);
    return {
        coordinator,
        events,
        logs: lines,
        options,
        eventsOf,
        async event(type, predicate = () => true, timeoutMs = kPrompt) {
            let found: Extract<CoordinatorEvent, {type: typeof type}> | undefined;
            await until(() => (found = eventsOf(type).find(predicate)) !== undefined, `event ${type}`, timeoutMs);
            return found!;
        },
        client: (rank, more) => CoordinatorClient.connect(clientOptions(rank, more)),
        clientOptions,
        hello: (rank, more = {}) => ({
            kind: "hello",
            protocol: PROTOCOL_VERSION,
            token: options.token,
            jobId: options.jobId,
            rank,
            host: options.ranks.find((r) => r.rank === rank)?.host ?? "nowhere",
            pid: 2000 + rank,
            mixzVersion: "0.1.0",
            ...more
        })
    };
}

/** Connects `count` real clients (ranks 0..count−1) concurrently; they resolve once all joined. */
export function joinAll(test: TestCoordinator, count: number, overrides: Partial<CoordinatorClientOptions> = {}): Promise<CoordinatorClient[]> {
    return Promise.all(Array.from({length: count}, (_, rank) => test.client(rank, overrides)));
}

/**
 * A WebSocket speaking the protocol by hand: queued incoming messages, the close code, and no
 * heartbeats unless the test sends them.
 */
export class RawClient {
    readonly messages: CoordinatorMessage[] = [];
    readonly closed: Promise<{code: number; reason: string}>;
    private constructor(readonly ws: WebSocket) {
        ws.on("message", (data: RawData, isBinary: boolean) => {
            if (isBinary) this.messages.push(decodeCoordinatorMessage(data as Buffer));
        });
        ws.on("error", () => {});
        this.closed = new Promise((resolve) => ws.once("close", (code: number, reason: Buffer) => resolve({code, reason: reason.toString()})));
    }

    static async open(url: string, maxPayload?: number): Promise<RawClient> {
        const ws = new WebSocket(url, maxPayload === undefined ? {} : {maxPayload});
        await new Promise<void>((resolve, reject) => {
            ws.once("open", () => resolve());
            ws.once("error", reject);
        });
        return new RawClient(ws);
    }

    send(message: DaemonMessage): void {
        this.ws.send(encodeMessage(message));
    }

    sendBytes(bytes: Uint8Array | string, binary = true): void {
        this.ws.send(bytes, {binary});
    }

    /** The first queued message of `kind`, waiting for it. */
    async next<K extends CoordinatorMessage["kind"]>(kind: K, timeoutMs = kPrompt): Promise<Extract<CoordinatorMessage, {kind: K}>> {
        let found: CoordinatorMessage | undefined;
        await until(() => (found = this.messages.find((m) => m.kind === kind)) !== undefined, `a ${kind} frame`, timeoutMs);
        this.messages.splice(this.messages.indexOf(found!), 1);
        return found as Extract<CoordinatorMessage, {kind: K}>;
    }

    /** Says hello and waits for the welcome. */
    async join(hello: HelloMessage): Promise<void> {
        this.send(hello);
        await this.next("welcome");
    }

    async closedWithin(timeoutMs = kPrompt): Promise<{code: number; reason: string}> {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`connection not closed within ${timeoutMs} ms`)), timeoutMs);
        });
        try {
            return await Promise.race([this.closed, timeout]);
        } finally {
            clearTimeout(timer);
        }
    }

    terminate(): void {
        this.ws.terminate();
    }
}

/** Runs `fn`, which must reject; returns the error. */
export async function rejectionOf(promise: Promise<unknown>): Promise<Error & {code?: string}> {
    try {
        await promise;
    } catch (error) {
        assert.ok(error instanceof Error, `expected an Error, got ${String(error)}`);
        return error as Error & {code?: string};
    }
    assert.fail("expected a rejection");
}

/** A kv round trip through two clients: the job still works. */
export async function assertKvWorks(writer: CoordinatorClient, reader: CoordinatorClient, key = `check-${Math.random()}`): Promise<void> {
    await writer.kvSet(key, Buffer.from("still working"));
    const [value] = await reader.kvWait([key], kPrompt);
    assert.equal(Buffer.from(value!).toString(), "still working");
}

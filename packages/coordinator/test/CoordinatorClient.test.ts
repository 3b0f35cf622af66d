import assert from "node:assert/strict";
import {spawn} from "node:child_process";
import {createServer as createHttpServer} from "node:http";
import {createServer as createTcpServer, type AddressInfo} from "node:net";
import {fileURLToPath} from "node:url";
import {after, describe, it} from "node:test";
import {decodeDaemonMessage, encodeMessage, ErrorCodes, MixzError, type CoordinatorMessage, type DaemonMessage} from "@mixz/protocol";
import {CoordinatorClient, type CoordinatorClientOptions} from "@mixz/coordinator";
import {WebSocketServer, type WebSocket} from "ws";
import {kPrompt, memoryLogger, rejectionOf, startCoordinator, until, type TestCoordinator} from "./helpers.js";

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
});

async function coordinator(world: number, overrides: Parameters<typeof startCoordinator>[1] = {}): Promise<TestCoordinator> {
    const test = await startCoordinator(world, overrides);
    cleanups.push(() => test.coordinator.close());
    return test;
}

async function client(options: CoordinatorClientOptions): Promise<CoordinatorClient> {
    const connected = await CoordinatorClient.connect(options);
    cleanups.push(() => connected.close());
    return connected;
}

/** A port that was free a moment ago. */
async function freePort(): Promise<number> {
    const server = createTcpServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
    const {port} = server.address() as AddressInfo;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    return port;
}

/**
 * A fake coordinator: a bare ws server whose behaviour the test scripts, to play a coordinator
 * that is silent, slow or broken.
 */
async function fakeCoordinator(onMessage: (ws: WebSocket, message: DaemonMessage) => void): Promise<{url: string}> {
    const wss = new WebSocketServer({host: "127.0.0.1", port: 0});
    await new Promise<void>((resolve) => wss.once("listening", () => resolve()));
    wss.on("connection", (ws) => {
        ws.on("message", (data: Buffer) => onMessage(ws, decodeDaemonMessage(data)));
        ws.on("error", () => {});
    });
    cleanups.push(async () => {
        for (const ws of wss.clients) ws.terminate();
        await new Promise<void>((resolve) => wss.close(() => resolve()));
    });
    return {url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`};
}

function send(ws: WebSocket, message: CoordinatorMessage): void {
    ws.send(encodeMessage(message));
}

/** Options for a client of a fake coordinator. */
function fakeOptions(url: string, overrides: Partial<CoordinatorClientOptions> = {}): CoordinatorClientOptions {
    return {
        url, token: "t", jobId: "j", rank: 0, host: "h", pid: 1, mixzVersion: "0.1.0",
        connectTimeoutMs: kPrompt, joinTimeoutMs: kPrompt, heartbeatIntervalMs: 100,
        onAbort: () => {}, onLost: () => {}, ...overrides
    };
}

/** Welcomes and readies every hello; what else it does is up to `more`. */
function welcoming(more: (ws: WebSocket, message: DaemonMessage) => void = () => {}): (ws: WebSocket, message: DaemonMessage) => void {
    return (ws, message) => {
        if (message.kind === "hello") {
            send(ws, {kind: "welcome", rank: message.rank, worldSize: 1});
            send(ws, {kind: "ready"});
        } else {
            more(ws, message);
        }
    };
}

describe("connecting", () => {
    it("retries refused connections until the coordinator listens", async () => {
        const port = await freePort();
        const {logger, lines} = memoryLogger();
        const token = "secret";
        const pending = CoordinatorClient.connect({
            ...fakeOptions(`ws://127.0.0.1:${port}/`, {token, jobId: "job-test", host: "node-0", logger}),
            connectTimeoutMs: 10_000
        });
        await new Promise((resolve) => setTimeout(resolve, 300));
        const test = await coordinator(1, {port, token});
        const connected = await pending;
        cleanups.push(() => connected.close());
        assert.equal(connected.rank, 0);
        assert.ok(lines.some((line) => /retrying/.test(line.msg)), "the retries are logged at debug");
        await test.event("ready");
    });

    it("gives up after connectTimeoutMs, naming the URL", async () => {
        const port = await freePort();
        const started = Date.now();
        const error = await rejectionOf(CoordinatorClient.connect(fakeOptions(`ws://127.0.0.1:${port}/`, {connectTimeoutMs: 300})));
        assert.ok(error instanceof MixzError);
        assert.equal(error.code, ErrorCodes.coordinatorLost);
        assert.match(error.message, new RegExp(`cannot reach the coordinator at ws://127\\.0\\.0\\.1:${port}/ within 300 ms \\(\\d+ attempts; last: ECONNREFUSED`));
        assert.ok(Date.now() - started < 300 + kPrompt);
    });

    it("does not retry what retrying cannot fix (an HTTP server that is not a coordinator)", async () => {
        const server = createHttpServer((_, response) => response.writeHead(404).end());
        await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
        cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
        const {port} = server.address() as AddressInfo;
        const started = Date.now();
        const error = await rejectionOf(CoordinatorClient.connect(fakeOptions(`ws://127.0.0.1:${port}/`, {connectTimeoutMs: 10_000})));
        assert.equal(error.code, ErrorCodes.coordinatorLost);
        assert.match(error.message, /Unexpected server response: 404/);
        assert.ok(Date.now() - started < 5000, "failed at once");
    });

    it("a coordinator that never answers the hello: MIXZ_ERR_COORDINATOR_LOST within connectTimeoutMs", async () => {
        const fake = await fakeCoordinator(() => {});
        const error = await rejectionOf(CoordinatorClient.connect(fakeOptions(fake.url, {connectTimeoutMs: 400})));
        assert.equal(error.code, ErrorCodes.coordinatorLost);
        assert.match(error.message, /did not answer the hello within 400 ms/);
    });

    it("a refusal carries the reject's code", async () => {
        const test = await coordinator(2);
        const wrongToken = await rejectionOf(test.client(0, {token: "nope"}));
        assert.equal(wrongToken.code, ErrorCodes.protocol);
        assert.match(wrongToken.message, /the coordinator refused rank 0: wrong job token/);

        const first = test.client(0);
        await test.event("joined");
        const duplicate = await rejectionOf(test.client(0, {pid: 77}));
        assert.equal(duplicate.code, ErrorCodes.protocol);
        assert.match(duplicate.message, /rank 0 already joined from host node-0 \(pid 1000\)/);
        cleanups.push(async () => (await first).close());
        await client(test.clientOptions(1));
    });

    it("a version mismatch is MIXZ_ERR_VERSION_MISMATCH, category platform", async () => {
        const test = await coordinator(1, {mixzVersion: "0.2.0"});
        const error = await rejectionOf(test.client(0));
        assert.ok(error instanceof MixzError);
        assert.equal(error.code, ErrorCodes.versionMismatch);
        assert.equal(error.category, "platform");
    });

    it("an invalid hello is refused before any connection is made", async () => {
        const error = await rejectionOf(CoordinatorClient.connect(fakeOptions("ws://127.0.0.1:1/", {rank: -1})));
        assert.equal(error.code, ErrorCodes.protocol);
        assert.match(error.message, /"rank"/);
    });
});

describe("after joining", () => {
    it("welcome and ready in one breath are both seen", async () => {
        const fake = await fakeCoordinator(welcoming());
        const connected = await client(fakeOptions(fake.url, {rank: 5}));
        assert.equal(connected.rank, 5);
        assert.equal(connected.worldSize, 1);
    });

    it("kv_set and kv_get have a local deadline when the coordinator never answers", async () => {
        const fake = await fakeCoordinator(welcoming());
        const connected = await client(fakeOptions(fake.url, {requestTimeoutMs: 200}));
        const error = await rejectionOf(connected.kvGet("k"));
        assert.equal(error.code, ErrorCodes.storeTimeout);
        assert.match(error.message, /kv_get "k": the coordinator did not answer within 200 ms/);
        assert.equal((await rejectionOf(connected.kvSet("k", new Uint8Array(1)))).code, ErrorCodes.storeTimeout);
    });

    it("a silent coordinator is declared lost after silenceTimeoutMs", async () => {
        const fake = await fakeCoordinator(welcoming()); // never acks heartbeats
        let lost: MixzError | undefined;
        await client(fakeOptions(fake.url, {silenceTimeoutMs: 400, onLost: (error) => (lost = error)}));
        await until(() => lost !== undefined, "onLost");
        assert.equal(lost!.code, ErrorCodes.coordinatorLost);
        assert.match(lost!.message, /sent nothing for 400 ms/);
    });

    it("heartbeat acks keep a silent-looking coordinator alive", async () => {
        let acks = 0;
        const fake = await fakeCoordinator(welcoming((ws, message) => {
            if (message.kind === "heartbeat") send(ws, {kind: "heartbeat_ack", seq: message.seq});
        }));
        let lost = false;
        await client(fakeOptions(fake.url, {silenceTimeoutMs: 400, onLost: () => (lost = true), onHeartbeatAck: () => acks++}));
        await until(() => acks >= 6, "6 heartbeat acks");
        assert.equal(lost, false);
    });

    it("a malformed frame from the coordinator is a loss", async () => {
        const fake = await fakeCoordinator(welcoming((ws, message) => {
            if (message.kind === "kv_get") ws.send(Buffer.from([0xc1]));
        }));
        let lost: MixzError | undefined;
        const connected = await client(fakeOptions(fake.url, {onLost: (error) => (lost = error)}));
        const error = await rejectionOf(connected.kvGet("k"));
        assert.equal(error.code, ErrorCodes.coordinatorLost);
        assert.match(error.message, /malformed frame/);
        await until(() => lost !== undefined, "onLost");
    });

    it("requests after close() fail at once; close() is idempotent", async () => {
        const test = await coordinator(1);
        const connected = await test.client(0);
        await connected.close();
        await connected.close();
        assert.equal((await rejectionOf(connected.kvGet("k"))).code, ErrorCodes.coordinatorLost);
        assert.equal((await rejectionOf(connected.bye(0))).code, ErrorCodes.coordinatorLost);
        await connected.reportFailure("too late to tell"); // best effort: resolves, never rejects
        connected.sendMetrics({step: 1}); // dropped, no throw
    });

    it("unref() lets a finished daemon process exit by itself; its bye is not a loss", async () => {
        const test = await coordinator(2);
        const rank1 = client(test.clientOptions(1));
        const fixture = fileURLToPath(new URL("./fixtures/byeAndUnref.ts", import.meta.url));
        const options = test.clientOptions(0);
        const child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", fixture], {
            stdio: ["ignore", "pipe", "pipe"],
            env: {...process.env, FIXTURE_URL: options.url, FIXTURE_TOKEN: options.token, FIXTURE_JOB: options.jobId, FIXTURE_HOST: options.host}
        });
        let output = "";
        child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
        child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
        const code = await new Promise<number | null>((resolve) => {
            const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
            child.once("exit", (exitCode) => {
                clearTimeout(timer);
                resolve(exitCode);
            });
        });
        await rank1;
        assert.equal(code, 0, `the child did not exit by itself:\n${output}`);
        assert.match(output, /unrefed/);
        assert.deepEqual(await test.event("bye"), {type: "bye", rank: 0, exitCode: 0});
        await new Promise((resolve) => setTimeout(resolve, 200));
        assert.deepEqual(test.eventsOf("lost"), []);
    });
});

import assert from "node:assert/strict";
import {spawn} from "node:child_process";
import {fileURLToPath} from "node:url";
import {after, describe, it} from "node:test";
import {ErrorCodes, MixzError} from "@mixz/protocol";
import {Coordinator, type CoordinatorClient} from "@mixz/coordinator";
import {assertKvWorks, joinAll, kPrompt, memoryLogger, RawClient, rejectionOf, startCoordinator, until, type TestCoordinator} from "./helpers.js";

/** Everything a test opened, closed at the end even when the test failed half-way. */
const opened: Array<TestCoordinator | CoordinatorClient | RawClient> = [];
function keep<T extends TestCoordinator | CoordinatorClient | RawClient>(thing: T): T {
    opened.push(thing);
    return thing;
}
async function keepAll(clients: Promise<CoordinatorClient[]>): Promise<CoordinatorClient[]> {
    return (await clients).map(keep);
}
after(async () => {
    for (const thing of opened.reverse()) {
        if (thing instanceof RawClient) thing.terminate();
        else if ("coordinator" in thing) await thing.coordinator.close();
        else await thing.close();
    }
});

describe("join", () => {
    for (const world of [1, 2, 4]) {
        it(`${world} rank(s) join and all get ready`, async () => {
            const test = keep(await startCoordinator(world));
            const clients = await keepAll(joinAll(test, world));
            assert.deepEqual(clients.map((c) => [c.rank, c.worldSize]), Array.from({length: world}, (_, r) => [r, world]));
            await test.event("ready");
            assert.deepEqual(test.coordinator.joinedRanks(), Array.from({length: world}, (_, r) => r));
            const joined = test.eventsOf("joined").sort((a, b) => a.rank - b.rank);
            assert.deepEqual(joined.map((e) => [e.rank, e.host, e.pid]), test.options.ranks.map(({rank, host}) => [rank, host, 1000 + rank]));
            assert.equal(test.eventsOf("ready").length, 1);
            assert.match(test.coordinator.url, /^ws:\/\/127\.0\.0\.1:\d+\/$/);
            assert.ok(test.coordinator.port > 0);
        });
    }

    it("a client that joins early waits for ready and keeps heartbeating meanwhile", async () => {
        const test = keep(await startCoordinator(2, {heartbeatMisses: 3}));
        let acks = 0;
        const first = test.client(0, {onHeartbeatAck: () => acks++});
        await test.event("joined", (e) => e.rank === 0);
        // Six intervals: twice the heartbeat deadline passes while rank 0 waits for rank 1.
        await until(() => acks >= 6, "heartbeat acks before ready");
        assert.equal(test.eventsOf("ready").length, 0);
        keep(await test.client(1));
        keep(await first);
        assert.equal(test.eventsOf("lost").length, 0, "waiting for the others is not a loss");
    });

    it("join timeout names the ranks and hosts that never arrived; later hellos are refused", async () => {
        const test = keep(await startCoordinator(4, {joinTimeoutMs: 400}));
        const early = [test.client(0, {joinTimeoutMs: 60_000}), test.client(2, {joinTimeoutMs: 60_000})].map(rejectionOf);
        const event = await test.event("join_timeout");
        assert.deepEqual(event.missing, [{rank: 1, host: "node-0"}, {rank: 3, host: "node-1"}]);
        const line = test.logs.find((l) => /not every rank joined/.test(l.msg));
        assert.ok(line, "the timeout is logged");
        assert.match(line.msg, /rank 1 \(host node-0\), rank 3 \(host node-1\)/);
        const late = await rejectionOf(test.client(1));
        assert.equal(late.code, ErrorCodes.rendezvousTimeout);
        // The launcher aborts on join_timeout; the early ranks' connect() then fails.
        test.coordinator.abort(ErrorCodes.rendezvousTimeout, "not every rank joined");
        for (const pending of early) assert.equal((await pending).code, ErrorCodes.aborted);
        assert.equal(test.eventsOf("ready").length, 0);
    });

    it("the client's own join timeout rejects connect() with MIXZ_ERR_RDZV_TIMEOUT", async () => {
        const test = keep(await startCoordinator(2));
        const error = await rejectionOf(test.client(0, {joinTimeoutMs: 300}));
        assert.ok(error instanceof MixzError);
        assert.equal(error.code, ErrorCodes.rendezvousTimeout);
        assert.match(error.message, /not every rank joined within 300 ms/);
    });
});

describe("key-value store", () => {
    it("set, get, overwrite, missing key", async () => {
        const test = keep(await startCoordinator(2));
        const [a, b] = await keepAll(joinAll(test, 2));
        assert.equal(await b!.kvGet("nothing"), null);
        await a!.kvSet("k", Buffer.from("v1"));
        assert.equal(Buffer.from((await b!.kvGet("k"))!).toString(), "v1");
        await b!.kvSet("k", Buffer.from("v2"));
        assert.equal(Buffer.from((await a!.kvGet("k"))!).toString(), "v2");
    });

    it("0-byte and 1 MiB values round-trip exactly", async () => {
        const test = keep(await startCoordinator(2));
        const [a, b] = await keepAll(joinAll(test, 2));
        const big = new Uint8Array(1 << 20);
        for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
        await a!.kvSet("empty", new Uint8Array(0));
        await a!.kvSet("big", big);
        const [empty, got] = await b!.kvWait(["empty", "big"], kPrompt);
        assert.ok(empty instanceof Uint8Array && empty.byteLength === 0);
        assert.ok(got instanceof Uint8Array);
        assert.ok(Buffer.from(got).equals(Buffer.from(big)));
        const fetched = await b!.kvGet("empty");
        assert.ok(fetched !== null && fetched.byteLength === 0, "an empty value is not a missing one");
    });

    it("a wait posted before the set resolves when the last key arrives, values in order", async () => {
        const test = keep(await startCoordinator(4));
        const clients = await keepAll(joinAll(test, 4));
        const keys = clients.map((_, r) => `addr/${r}`);
        const waits = clients.map((client) => client.kvWait(keys, kPrompt));
        await new Promise((resolve) => setTimeout(resolve, 50));
        await Promise.all(clients.map((client, r) => client.kvSet(`addr/${r}`, Buffer.from(`address of ${r}`))));
        for (const values of await Promise.all(waits)) {
            assert.deepEqual(values.map((v) => Buffer.from(v).toString()), keys.map((_, r) => `address of ${r}`));
        }
    });

    it("a wait that times out names the missing keys; the job goes on", async () => {
        const test = keep(await startCoordinator(2));
        const [a, b] = await keepAll(joinAll(test, 2));
        await a!.kvSet("present", Buffer.from("x"));
        const started = Date.now();
        const error = await rejectionOf(b!.kvWait(["present", "absent-1", "absent-2"], 300));
        assert.ok(error instanceof MixzError);
        assert.equal(error.code, ErrorCodes.storeTimeout);
        assert.match(error.message, /2 of 3 keys never set: "absent-1", "absent-2"/);
        assert.ok(Date.now() - started >= 250, "not before its timeout");
        await assertKvWorks(a!, b!);
    });

    it("a reply too large for one frame becomes an error; the connection survives", async () => {
        const test = keep(await startCoordinator(2, {maxFrameBytes: 64 * 1024}));
        const [a, b] = await keepAll(joinAll(test, 2));
        await a!.kvSet("half-1", new Uint8Array(40 * 1024));
        await b!.kvSet("half-2", new Uint8Array(40 * 1024));
        const error = await rejectionOf(a!.kvWait(["half-1", "half-2"], kPrompt));
        assert.equal(error.code, ErrorCodes.protocol);
        assert.match(error.message, /above the frame limit of 65536 bytes/);
        assert.equal((await a!.kvWait(["half-2"], kPrompt))[0]!.byteLength, 40 * 1024);
        assert.equal(test.eventsOf("lost").length, 0);
    });

    it("an empty wait resolves at once", async () => {
        const test = keep(await startCoordinator(1));
        const [a] = await keepAll(joinAll(test, 1));
        assert.deepEqual(await a!.kvWait([], 100), []);
    });
});

describe("barrier", () => {
    it("4 ranks meet, repeatedly; the n-th call meets the n-th call", async () => {
        const test = keep(await startCoordinator(4));
        const clients = await keepAll(joinAll(test, 4));
        const order: string[] = [];
        await Promise.all(clients.map(async (client, rank) => {
            for (let generation = 0; generation < 5; generation++) {
                // Stagger arrivals so that a broken barrier would let early ranks through.
                await new Promise((resolve) => setTimeout(resolve, (rank * 7 + generation * 3) % 20));
                order.push(`arrive ${generation}`);
                await client.barrier("step", kPrompt);
                order.push(`leave ${generation}`);
            }
        }));
        // Nobody leaves generation n before everyone arrived at it.
        for (let generation = 0; generation < 5; generation++) {
            const lastArrival = order.lastIndexOf(`arrive ${generation}`);
            const firstLeave = order.indexOf(`leave ${generation}`);
            assert.ok(lastArrival < firstLeave, `generation ${generation}: ${order.join(", ")}`);
        }
    });

    it("different names are independent", async () => {
        const test = keep(await startCoordinator(2));
        const [a, b] = await keepAll(joinAll(test, 2));
        await Promise.all([a!.barrier("x", kPrompt), b!.barrier("x", kPrompt)]);
        await Promise.all([a!.barrier("y", kPrompt), b!.barrier("y", kPrompt), a!.barrier("z", kPrompt), b!.barrier("z", kPrompt)]);
    });

    it("a timeout names the ranks (and hosts) that did not arrive", async () => {
        const test = keep(await startCoordinator(4));
        const clients = await keepAll(joinAll(test, 4));
        const results = await Promise.allSettled([clients[0]!.barrier("init", 400), clients[2]!.barrier("init", 400)]);
        for (const result of results) {
            assert.equal(result.status, "rejected");
            const error = (result as PromiseRejectedResult).reason as MixzError;
            assert.equal(error.code, ErrorCodes.storeTimeout);
            assert.match(error.message, /2 of 4 ranks did not arrive: rank 1 \(host node-0\), rank 3 \(host node-1\)/);
        }
        await assertKvWorks(clients[1]!, clients[3]!);
    });
});

describe("heartbeats and disconnects", () => {
    it("a rank that stops heartbeating is lost within interval × misses (+ slack); others are not", async () => {
        const interval = 100;
        const misses = 3;
        const test = keep(await startCoordinator(3, {heartbeatIntervalMs: interval, heartbeatMisses: misses}));
        const silent = keep(await RawClient.open(test.coordinator.url));
        const pending = [test.client(0), test.client(1)];
        await silent.join(test.hello(2));
        const joinedAt = Date.now();
        const clients = (await Promise.all(pending)).map(keep);
        const lost = await test.event("lost", (e) => e.rank === 2, 10_000);
        const after = Date.now() - joinedAt;
        assert.deepEqual(lost, {type: "lost", rank: 2, host: "node-1", reason: "heartbeat"});
        assert.ok(after >= interval * misses - 20, `not before the deadline (${after} ms)`);
        assert.ok(after <= interval * misses + 2500, `within the deadline plus slack (${after} ms)`);
        assert.ok(test.logs.some((l) => l.level >= 50 && /missed its heartbeats/.test(l.msg)));
        // The real clients keep heartbeating: not lost, and the job still works.
        await new Promise((resolve) => setTimeout(resolve, interval * misses));
        assert.deepEqual(test.eventsOf("lost").map((e) => e.rank), [2]);
        await assertKvWorks(clients[0]!, clients[1]!);
    });

    it("any frame counts as a sign of life", async () => {
        const test = keep(await startCoordinator(1, {heartbeatIntervalMs: 100, heartbeatMisses: 3}));
        const raw = keep(await RawClient.open(test.coordinator.url));
        await raw.join(test.hello(0));
        for (let i = 0; i < 12; i++) {
            raw.send({kind: "kv_get", id: i, key: "k"});
            await new Promise((resolve) => setTimeout(resolve, 50));
        }
        assert.equal(test.eventsOf("lost").length, 0);
    });

    it("a disconnect without bye is lost: disconnected; pending waits of that rank are dropped", async () => {
        const test = keep(await startCoordinator(3));
        const clients = await keepAll(joinAll(test, 3));
        const waiting = rejectionOf(clients[2]!.kvWait(["never"], 10_000));
        const barrier = rejectionOf(clients[2]!.barrier("b", 10_000));
        await new Promise((resolve) => setTimeout(resolve, 50));
        await clients[2]!.close();
        assert.equal((await waiting).code, ErrorCodes.coordinatorLost);
        assert.equal((await barrier).code, ErrorCodes.coordinatorLost);
        assert.deepEqual(await test.event("lost"), {type: "lost", rank: 2, host: "node-1", reason: "disconnected"});
        await assertKvWorks(clients[0]!, clients[1]!);
    });

    it("a disconnect after bye is not a loss", async () => {
        const test = keep(await startCoordinator(2, {heartbeatMisses: 5}));
        const [a, b] = await keepAll(joinAll(test, 2));
        await b!.bye(0);
        await b!.close();
        await a!.bye(3);
        await a!.close();
        await until(() => test.eventsOf("bye").length === 2, "two byes");
        assert.deepEqual(test.eventsOf("bye").sort((x, y) => x.rank - y.rank), [{type: "bye", rank: 0, exitCode: 3}, {type: "bye", rank: 1, exitCode: 0}]);
        // Longer than the heartbeat deadline: a rank that said bye is not expected to heartbeat.
        await new Promise((resolve) => setTimeout(resolve, 700));
        assert.equal(test.eventsOf("lost").length, 0);
    });

    it("the client learns about a lost coordinator through onLost", async () => {
        const test = keep(await startCoordinator(1));
        let lost: MixzError | undefined;
        const client = keep(await test.client(0, {onLost: (error) => (lost = error)}));
        const waiting = rejectionOf(client.kvWait(["never"], 10_000));
        await new Promise((resolve) => setTimeout(resolve, 50));
        await test.coordinator.close();
        await until(() => lost !== undefined, "onLost");
        assert.equal(lost!.code, ErrorCodes.coordinatorLost);
        // Waits pending at close are answered (aborted) rather than left to their timeouts.
        assert.equal((await waiting).code, ErrorCodes.aborted);
        assert.equal((await rejectionOf(client.kvGet("k"))).code, ErrorCodes.coordinatorLost);
    });
});

describe("failures, metrics, abort", () => {
    it("failure and metrics reach the launcher as events", async () => {
        const test = keep(await startCoordinator(2));
        const [a, b] = await keepAll(joinAll(test, 2));
        a!.sendMetrics({step: 3, loss: 1.25, tokensPerSec: 1000, stepTimeMs: 20});
        b!.sendMetrics({step: 3, loss: Number.NaN});
        b!.sendMetrics({step: 4, stepTimeMs: Number.NaN}); // invalid: dropped by the client, not fatal
        await b!.reportFailure("boom", "Error: boom\n    at train.ts:1:1");
        const failure = await test.event("failure");
        assert.deepEqual(failure, {type: "failure", rank: 1, message: "boom", stack: "Error: boom\n    at train.ts:1:1"});
        await until(() => test.eventsOf("metrics").length === 2, "two metrics events");
        const metrics = test.eventsOf("metrics").sort((x, y) => x.rank - y.rank);
        assert.deepEqual(metrics[0], {type: "metrics", rank: 0, metrics: {kind: "metrics", step: 3, loss: 1.25, tokensPerSec: 1000, stepTimeMs: 20}});
        assert.ok(Number.isNaN(metrics[1]!.metrics.loss));
        assert.equal(test.eventsOf("lost").length, 0);
    });

    it("abort reaches every rank and fails pending waits with MIXZ_ERR_ABORTED", async () => {
        const test = keep(await startCoordinator(4));
        const aborts: Array<[number, string, string]> = [];
        const clients = await keepAll(Promise.all([0, 1, 2, 3].map((rank) => test.client(rank, {onAbort: (code, reason) => aborts.push([rank, code, reason])}))));
        const waits = [clients[0]!.kvWait(["never"], 10_000), clients[1]!.barrier("b", 10_000), clients[2]!.barrier("b", 10_000)].map(rejectionOf);
        await new Promise((resolve) => setTimeout(resolve, 50));
        test.coordinator.abort(ErrorCodes.rankFailed, "rank 3 exited with code 1");
        for (const wait of waits) {
            const error = await wait;
            assert.equal(error.code, ErrorCodes.aborted);
            assert.match(error.message, /rank 3 exited with code 1/);
        }
        await until(() => aborts.length === 4, "abort on every rank");
        assert.deepEqual(aborts.map(([rank]) => rank).sort(), [0, 1, 2, 3]);
        assert.ok(aborts.every(([, code, reason]) => code === ErrorCodes.rankFailed && reason === "rank 3 exited with code 1"));
        // Later requests fail at once, locally.
        assert.equal((await rejectionOf(clients[3]!.kvSet("k", new Uint8Array(1)))).code, ErrorCodes.aborted);
        test.coordinator.abort(ErrorCodes.aborted, "second abort is ignored");
    });

    it("a huge abort reason is cut to fit; after abort, silence is no longer a loss", async () => {
        const test = keep(await startCoordinator(1, {heartbeatIntervalMs: 100, heartbeatMisses: 3}));
        const raw = keep(await RawClient.open(test.coordinator.url));
        await raw.join(test.hello(0));
        test.coordinator.abort("", "x".repeat(1_000_000));
        const abort = await raw.next("abort");
        assert.equal(abort.code, ErrorCodes.aborted);
        assert.ok(abort.reason.length < 100_000 && /more characters\)$/.test(abort.reason));
        await new Promise((resolve) => setTimeout(resolve, 700));
        assert.equal(test.eventsOf("lost").length, 0);
    });

    it("after abort the coordinator refuses store requests and new ranks", async () => {
        const test = keep(await startCoordinator(2));
        const raw = keep(await RawClient.open(test.coordinator.url));
        await raw.join(test.hello(0));
        test.coordinator.abort(ErrorCodes.aborted, "Ctrl-C");
        assert.equal((await raw.next("abort")).reason, "Ctrl-C");
        raw.send({kind: "kv_set", id: 9, key: "k", value: new Uint8Array(1)});
        const reply = await raw.next("reply");
        assert.ok(!reply.ok && reply.code === ErrorCodes.aborted && reply.id === 9);
        raw.send({kind: "heartbeat", seq: 1});
        assert.equal((await raw.next("heartbeat_ack")).seq, 1, "heartbeats are still answered");
        assert.equal((await rejectionOf(test.client(1))).code, ErrorCodes.aborted);
    });
});

describe("listening and closing", () => {
    it("a port in use is MIXZ_ERR_ADDRESS_IN_USE naming host:port", async () => {
        const test = keep(await startCoordinator(1));
        const {logger} = memoryLogger();
        const error = await rejectionOf(Coordinator.start({...test.options, port: test.coordinator.port, logger}));
        assert.ok(error instanceof MixzError);
        assert.equal(error.code, ErrorCodes.addressInUse);
        assert.equal(error.category, "user");
        assert.match(error.message, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${test.coordinator.port}: address already in use; pick another --master-port or 0 for a free one`));
    });

    it("an address that is not local names it", async () => {
        const {logger} = memoryLogger();
        // 192.0.2.0/24 is TEST-NET-1: never assigned to a host.
        const error = await rejectionOf(Coordinator.start({
            host: "192.0.2.1", port: 0, token: "t", jobId: "j", ranks: [{rank: 0, host: "h"}], joinTimeoutMs: 1000,
            heartbeatIntervalMs: 100, heartbeatMisses: 3, logger, onEvent: () => {}
        }));
        assert.equal(error.code, ErrorCodes.addressInUse);
        assert.match(error.message, /cannot listen on 192\.0\.2\.1:0: 192\.0\.2\.1 is not an address of this machine/);
    });

    it("invalid options are refused before listening", async () => {
        const test = keep(await startCoordinator(1));
        const {logger} = memoryLogger();
        const base = {...test.options, port: 0, logger};
        await assert.rejects(Coordinator.start({...base, ranks: []}), (e: MixzError) => e.code === ErrorCodes.emptyWorld);
        await assert.rejects(Coordinator.start({...base, ranks: [{rank: 1, host: "h"}]}), /ranks must be 0\.\.0/);
        await assert.rejects(Coordinator.start({...base, heartbeatMisses: 0}), /heartbeatMisses/);
        await assert.rejects(Coordinator.start({...base, joinTimeoutMs: -1}), /joinTimeoutMs/);
        await assert.rejects(Coordinator.start({...base, port: 70000}), /--master-port/);
    });

    it("close() is idempotent, answers pending waits and ends every connection", async () => {
        const test = await startCoordinator(2);
        const [a, b] = await keepAll(joinAll(test, 2));
        const waiting = rejectionOf(a!.kvWait(["never"], 10_000));
        const raw = keep(await RawClient.open(test.coordinator.url));
        const first = test.coordinator.close();
        const second = test.coordinator.close();
        assert.equal(first, second);
        await first;
        await test.coordinator.close();
        assert.equal((await waiting).code, ErrorCodes.aborted);
        assert.equal((await raw.closedWithin()).code, 1001);
        assert.equal((await rejectionOf(b!.kvGet("k"))).code, ErrorCodes.coordinatorLost);
        assert.equal(test.eventsOf("lost").length, 0, "no events after close()");
    });

    it("after close() nothing keeps the process alive (child process exits by itself)", async () => {
        const fixture = fileURLToPath(new URL("./fixtures/closeAndExit.ts", import.meta.url));
        const child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", fixture], {stdio: ["ignore", "pipe", "pipe"]});
        let output = "";
        child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
        child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
        const started = Date.now();
        const code = await new Promise<number | null>((resolve) => {
            const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
            child.once("exit", (exitCode) => {
                clearTimeout(timer);
                resolve(exitCode);
            });
        });
        assert.equal(code, 0, `the child did not exit cleanly by itself:\n${output}`);
        assert.match(output, /closed; active resources: \[\]/);
        assert.match(output, /client done/);
        assert.ok(Date.now() - started < 15_000);
    });
});

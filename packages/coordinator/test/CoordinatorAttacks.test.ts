/**
 * Hostile and broken peers: in every case the offending connection is refused or closed, the
 * refusal is logged, and the ranks of the job keep working (a kv round trip afterwards).
 */
import assert from "node:assert/strict";
import {connect, type Socket} from "node:net";
import {after, describe, it} from "node:test";
import {encodeMessage, ErrorCodes, PROTOCOL_VERSION} from "@mixz/protocol";
import type {CoordinatorClient} from "@mixz/coordinator";
import {Packr} from "msgpackr";
import {assertKvWorks, kPrompt, RawClient, startCoordinator, until, type TestCoordinator} from "./helpers.js";

const rawPackr = new Packr({useRecords: false});

interface Job {
    readonly test: TestCoordinator;
    readonly a: CoordinatorClient;
    readonly b: CoordinatorClient;
    /** Rank 2, joined by hand (only with `withRawRank`): it can misbehave after joining. */
    readonly rawRank: RawClient | undefined;
}

const jobs: Job[] = [];
const raws: RawClient[] = [];
after(async () => {
    for (const raw of raws) raw.terminate();
    for (const job of jobs) {
        job.rawRank?.terminate();
        await Promise.all([job.a.close(), job.b.close()]);
        await job.test.coordinator.close();
    }
});

/** A job of two real ranks (plus a hand-driven rank 2 when asked), all joined and ready. */
async function startJob(options: {withRawRank?: boolean; maxFrameBytes?: number; helloTimeoutMs?: number} = {}): Promise<Job> {
    const world = options.withRawRank === true ? 3 : 2;
    const test = await startCoordinator(world, {
        ...(options.maxFrameBytes === undefined ? {} : {maxFrameBytes: options.maxFrameBytes}),
        ...(options.helloTimeoutMs === undefined ? {} : {helloTimeoutMs: options.helloTimeoutMs})
    });
    const clients = Promise.all([test.client(0), test.client(1)]);
    let rawRank: RawClient | undefined;
    if (options.withRawRank === true) {
        rawRank = await RawClient.open(test.coordinator.url);
        await rawRank.join(test.hello(2));
    }
    const [a, b] = await clients;
    const job = {test, a: a!, b: b!, rawRank};
    jobs.push(job);
    await test.event("ready");
    return job;
}

async function openRaw(job: Job): Promise<RawClient> {
    const raw = await RawClient.open(job.test.coordinator.url);
    raws.push(raw);
    return raw;
}

/** The attacker got a reject frame with `code` and a 1008 close; the refusal was logged and reported; the job works. */
async function assertRefused(job: Job, raw: RawClient, code: string, message: RegExp): Promise<void> {
    const reject = await raw.next("reject");
    assert.equal(reject.code, code);
    assert.match(reject.message, message);
    assert.equal((await raw.closedWithin()).code, 1008);
    await assertReported(job, code, message);
}

/** A `rejected` event and a warn line say what happened; the real ranks still work. */
async function assertReported(job: Job, code: string, message: RegExp): Promise<void> {
    const event = await job.test.event("rejected", (e) => message.test(e.message));
    assert.equal(event.code, code);
    assert.match(event.remote, /^127\.0\.0\.1:\d+$/);
    assert.ok(job.test.logs.some((line) => line.level === 40 && message.test(line.msg)), `a warn line matching ${message}`);
    await assertJobIntact(job);
}

async function assertJobIntact(job: Job): Promise<void> {
    await assertKvWorks(job.a, job.b);
    assert.deepEqual(job.test.eventsOf("lost").filter((e) => e.rank < 2), [], "the real ranks are not disturbed");
}

/** Opens a plain TCP connection, writes `bytes`, and collects what comes back until it closes. */
async function rawTcp(job: Job, bytes: string | Buffer | undefined): Promise<string> {
    const socket: Socket = connect(job.test.coordinator.port, "127.0.0.1");
    let received = "";
    socket.on("data", (chunk: Buffer) => (received += chunk.toString("latin1")));
    socket.on("error", () => {});
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    if (bytes !== undefined) socket.write(bytes);
    await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("the coordinator did not close the raw TCP connection")), kPrompt);
        socket.once("close", () => {
            clearTimeout(timer);
            resolve();
        });
    });
    return received;
}

describe("refused before joining", () => {
    it("garbage bytes as the first frame", async () => {
        const job = await startJob();
        const raw = await openRaw(job);
        raw.sendBytes(Buffer.from([0xc1, 0xde, 0xad, 0xbe, 0xef]));
        await assertRefused(job, raw, ErrorCodes.protocol, /malformed first frame/);
    });

    it("a truncated hello", async () => {
        const job = await startJob();
        const raw = await openRaw(job);
        const frame = encodeMessage(job.test.hello(0));
        raw.sendBytes(frame.subarray(0, frame.byteLength - 5));
        await assertRefused(job, raw, ErrorCodes.protocol, /truncated frame/);
    });

    it("a text frame", async () => {
        const job = await startJob();
        const raw = await openRaw(job);
        raw.sendBytes(JSON.stringify(job.test.hello(0)), false);
        await assertRefused(job, raw, ErrorCodes.protocol, /text frame/);
    });

    it("a first frame that is not hello", async () => {
        const job = await startJob();
        const raw = await openRaw(job);
        raw.send({kind: "kv_get", id: 1, key: "secret"});
        await assertRefused(job, raw, ErrorCodes.protocol, /the first frame must be hello, got kv_get/);
    });

    it("a coordinator message sent to the coordinator", async () => {
        const job = await startJob();
        const raw = await openRaw(job);
        raw.sendBytes(encodeMessage({kind: "welcome", rank: 0, worldSize: 2}));
        await assertRefused(job, raw, ErrorCodes.protocol, /"welcome" is a coordinator message/);
    });

    it("a wrong token (never echoed back)", async () => {
        const job = await startJob();
        const raw = await openRaw(job);
        raw.send(job.test.hello(0, {token: "guessed-token"}));
        await assertRefused(job, raw, ErrorCodes.protocol, /wrong job token$/);
        assert.ok(!job.test.logs.some((line) => JSON.stringify(line).includes(job.test.options.token)), "the real token is never logged");
    });

    it("a token of another length, and an empty one", async () => {
        const job = await startJob();
        const long = await openRaw(job);
        long.send(job.test.hello(0, {token: job.test.options.token + "x"}));
        await assertRefused(job, long, ErrorCodes.protocol, /wrong job token$/);
        const empty = await openRaw(job);
        empty.sendBytes(rawPackr.pack({...job.test.hello(0), token: ""}));
        await assertRefused(job, empty, ErrorCodes.protocol, /"token"/);
    });

    it("a wrong job id", async () => {
        const job = await startJob();
        const raw = await openRaw(job);
        raw.send(job.test.hello(0, {jobId: "another-job"}));
        await assertRefused(job, raw, ErrorCodes.protocol, /job id "another-job" is not this job's \("job-test"\)/);
    });

    it("a wrong protocol version names both versions", async () => {
        const job = await startJob();
        const raw = await openRaw(job);
        raw.sendBytes(rawPackr.pack({...job.test.hello(0), protocol: 999}));
        await assertRefused(job, raw, ErrorCodes.protocol, new RegExp(`protocol 999, this side speaks ${PROTOCOL_VERSION}`));
    });

    it("a rank out of range", async () => {
        const job = await startJob();
        const raw = await openRaw(job);
        raw.send(job.test.hello(7));
        await assertRefused(job, raw, ErrorCodes.protocol, /rank 7 is not in the plan \(world size 2\)/);
    });

    it("a host that does not match the plan", async () => {
        const job = await startJob();
        const raw = await openRaw(job);
        raw.send(job.test.hello(1, {host: "intruder"}));
        await assertRefused(job, raw, ErrorCodes.protocol, /rank 1 belongs to host node-0 in the plan, but says it runs on intruder/);
    });

    it("a second connection for a joined rank; the original connection is untouched", async () => {
        const job = await startJob();
        const raw = await openRaw(job);
        // A perfect replay of rank 0's hello, token included.
        raw.send(job.test.hello(0));
        await assertRefused(job, raw, ErrorCodes.protocol, /rank 0 already joined from host node-0 \(pid 1000\)/);
        await Promise.all([job.a.barrier("after-replay", kPrompt), job.b.barrier("after-replay", kPrompt)]);
        assert.deepEqual(job.test.coordinator.joinedRanks(), [0, 1]);
    });

    it("a mixz version other than the launcher's, when the launcher gives one", async () => {
        const test = await startCoordinator(1, {mixzVersion: "9.9.9"});
        try {
            const raw = await RawClient.open(test.coordinator.url);
            raws.push(raw);
            raw.send(test.hello(0));
            const reject = await raw.next("reject");
            assert.equal(reject.code, ErrorCodes.versionMismatch);
            assert.match(reject.message, /runs mixz 0\.1\.0, the launcher runs 9\.9\.9/);
        } finally {
            await test.coordinator.close();
        }
    });

    it("no hello within the hello timeout", async () => {
        const job = await startJob({helloTimeoutMs: 300});
        const raw = await openRaw(job);
        await assertRefused(job, raw, ErrorCodes.protocol, /no hello within 300 ms/);
    });

    it("a frame above maxFrameBytes before hello: ws closes it with 1009", async () => {
        const job = await startJob({maxFrameBytes: 64 * 1024});
        const raw = await openRaw(job);
        raw.sendBytes(Buffer.alloc(64 * 1024 + 1, 0x61));
        assert.equal((await raw.closedWithin()).code, 1009);
        await assertReported(job, ErrorCodes.protocol, /bad frame: .*WS_ERR_UNSUPPORTED_MESSAGE_LENGTH/);
    });

    it("twenty bad connections at once", async () => {
        const job = await startJob();
        const attackers = await Promise.all(Array.from({length: 20}, () => openRaw(job)));
        attackers.forEach((raw, i) => (i % 2 === 0 ? raw.send(job.test.hello(0, {token: `t${i}`})) : raw.sendBytes(Buffer.from([i, 0xff, 0x00]))));
        await Promise.all(attackers.map((raw) => raw.closedWithin()));
        await until(() => job.test.eventsOf("rejected").length >= 20, "20 rejected events");
        await assertJobIntact(job);
    });
});

describe("not WebSocket at all", () => {
    it("a plain HTTP GET gets 426 and is logged", async () => {
        const job = await startJob();
        const response = await rawTcp(job, "GET / HTTP/1.1\r\nHost: coordinator\r\n\r\n");
        assert.match(response, /^HTTP\/1\.1 426 /);
        await assertReported(job, ErrorCodes.protocol, /plain HTTP GET request/);
    });

    it("raw TCP garbage gets 400 and is logged", async () => {
        const job = await startJob();
        const response = await rawTcp(job, Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a, 0x0d, 0x0a, 0x42]));
        assert.match(response, /^(HTTP\/1\.1 400 |)/);
        await assertReported(job, ErrorCodes.protocol, /not an HTTP request/);
    });

    it("a TCP connection that sends nothing is cut after the hello timeout", async () => {
        const job = await startJob({helloTimeoutMs: 300});
        await rawTcp(job, undefined);
        await assertReported(job, ErrorCodes.protocol, /no WebSocket upgrade within 300 ms/);
    });

    it("a broken WebSocket handshake gets 400 and is logged", async () => {
        const job = await startJob();
        const response = await rawTcp(job, "GET / HTTP/1.1\r\nHost: c\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n");
        assert.match(response, /^HTTP\/1\.1 400 /);
        await assertReported(job, ErrorCodes.protocol, /bad WebSocket handshake: Missing or invalid Sec-WebSocket-Key/);
    });
});

describe("a joined rank that misbehaves is closed and lost", () => {
    async function assertRankDropped(job: Job, closeCode: number): Promise<void> {
        assert.equal((await job.rawRank!.closedWithin()).code, closeCode);
        assert.deepEqual(await job.test.event("lost"), {type: "lost", rank: 2, host: "node-1", reason: "disconnected"});
        assert.deepEqual(job.rawRank!.messages.filter((m) => m.kind === "reply"), [], "garbage gets no reply");
        await assertJobIntact(job);
    }

    it("garbage bytes: close 1002", async () => {
        const job = await startJob({withRawRank: true});
        job.rawRank!.sendBytes(Buffer.from([0x93, 0x01]));
        await assertRankDropped(job, 1002);
        assert.ok(job.test.logs.some((line) => line.level === 40 && /rank 2 \(host node-1\) sent a malformed frame/.test(line.msg)));
    });

    it("a message with a wrong field type: close 1002", async () => {
        const job = await startJob({withRawRank: true});
        job.rawRank!.sendBytes(rawPackr.pack({kind: "kv_set", id: 1, key: "k", value: "not bytes"}));
        await assertRankDropped(job, 1002);
    });

    it("a text frame: close 1002", async () => {
        const job = await startJob({withRawRank: true});
        job.rawRank!.sendBytes("{\"kind\":\"heartbeat\"}", false);
        await assertRankDropped(job, 1002);
    });

    it("a replayed hello on the same connection: rejected with 1008", async () => {
        const job = await startJob({withRawRank: true});
        job.rawRank!.send(job.test.hello(2));
        const reject = await job.rawRank!.next("reject");
        assert.match(reject.message, /rank 2 already joined from host node-1 \(pid 2002\)/);
        await assertRankDropped(job, 1008);
    });

    it("a frame above maxFrameBytes: ws closes with 1009", async () => {
        const job = await startJob({withRawRank: true, maxFrameBytes: 64 * 1024});
        job.rawRank!.sendBytes(encodeMessage({kind: "kv_set", id: 1, key: "big", value: new Uint8Array(128 * 1024)}));
        await assertRankDropped(job, 1009);
        assert.equal(await job.a.kvGet("big"), null, "nothing of the oversized frame was stored");
    });
});

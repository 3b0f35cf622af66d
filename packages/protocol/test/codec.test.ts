import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {Packr} from "msgpackr";
import {
    decodeCoordinatorMessage,
    decodeDaemonMessage,
    encodeMessage,
    ErrorCodes,
    kMaxNameChars,
    kMaxTextChars,
    kMaxTimeoutMs,
    MixzError,
    PROTOCOL_VERSION,
    truncateText,
    type AnyMessage,
    type CoordinatorMessage,
    type DaemonMessage
} from "@mixz/protocol";

/** Packs anything, bypassing encodeMessage's validation: how a hostile or broken peer writes. */
const rawPackr = new Packr({useRecords: false});
const raw = (value: unknown): Uint8Array => rawPackr.pack(value);

const hello: DaemonMessage = {
    kind: "hello",
    protocol: PROTOCOL_VERSION,
    token: "0123456789abcdef",
    jobId: "job-1",
    rank: 3,
    host: "worker-1",
    pid: 4242,
    mixzVersion: "0.1.0"
};

const daemonMessages: DaemonMessage[] = [
    hello,
    {kind: "kv_set", id: 1, key: "addr/0", value: new Uint8Array([1, 2, 3, 255])},
    {kind: "kv_set", id: 2, key: "empty", value: new Uint8Array(0)},
    {kind: "kv_set", id: 3, key: "big", value: new Uint8Array(1 << 20).fill(7)},
    {kind: "kv_get", id: 4, key: "addr/0"},
    {kind: "kv_wait", id: 5, keys: ["a", "b", "c"], timeoutMs: 1500},
    {kind: "kv_wait", id: 6, keys: [], timeoutMs: 0.5},
    {kind: "barrier", id: 7, name: "init", timeoutMs: kMaxTimeoutMs},
    {kind: "heartbeat", seq: 0},
    {kind: "heartbeat", seq: 2 ** 40},
    {kind: "metrics", step: 10},
    {kind: "metrics", step: 11, loss: 2.5, tokensPerSec: 1234.5, stepTimeMs: 80, gatherMs: 10, computeMs: 60, reduceMs: 10},
    {kind: "metrics", step: 12, loss: Number.NaN},
    {kind: "failure", message: "boom"},
    {kind: "failure", message: "boom", stack: "Error: boom\n    at train.ts:3:9"},
    {kind: "bye", exitCode: 0},
    {kind: "bye", exitCode: 255}
];

const coordinatorMessages: CoordinatorMessage[] = [
    {kind: "welcome", rank: 3, worldSize: 4},
    {kind: "ready"},
    {kind: "reply", id: 1, ok: true},
    {kind: "reply", id: 2, ok: true, values: [new Uint8Array([9]), null, new Uint8Array(0)]},
    {kind: "reply", id: 3, ok: false, code: ErrorCodes.storeTimeout, message: "keys a, b were not set within 100 ms"},
    {kind: "heartbeat_ack", seq: 7},
    {kind: "abort", code: ErrorCodes.rankFailed, reason: "rank 2 exited with code 3"},
    {kind: "reject", code: ErrorCodes.protocol, message: "wrong token"}
];

/** Decoded bytes come back as Buffers (a Uint8Array subclass); compare contents, not prototypes. */
function normalize(value: unknown): unknown {
    if (value instanceof Uint8Array) return {bytes: Array.from(value)};
    if (Array.isArray(value)) return value.map(normalize);
    if (typeof value === "object" && value !== null) {
        return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v)]));
    }
    return value;
}

/** Runs `fn`, which must throw MixzError(MIXZ_ERR_PROTOCOL) and nothing else; returns it. */
function protocolErrorOf(fn: () => unknown): MixzError {
    try {
        fn();
    } catch (error) {
        assert.ok(error instanceof MixzError, `expected a MixzError, got ${String(error)}`);
        assert.equal(error.code, ErrorCodes.protocol);
        assert.equal(error.category, "infra");
        return error;
    }
    assert.fail("expected a protocol error");
}

function decodeAny(frame: Uint8Array): AnyMessage {
    try {
        return decodeDaemonMessage(frame);
    } catch (error) {
        if (error instanceof MixzError && /coordinator message/.test(error.message)) return decodeCoordinatorMessage(frame);
        throw error;
    }
}

/** Deterministic pseudo-random numbers (mulberry32): failures reproduce. */
function random(seed: number): () => number {
    let state = seed >>> 0;
    return () => {
        state = (state + 0x6d2b79f5) >>> 0;
        let t = state;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

describe("round trip", () => {
    for (const message of daemonMessages) {
        it(`daemon ${message.kind} ${JSON.stringify(normalize(message)).slice(0, 60)}`, () => {
            const decoded = decodeDaemonMessage(encodeMessage(message));
            assert.deepEqual(normalize(decoded), normalize(message));
        });
    }
    for (const message of coordinatorMessages) {
        it(`coordinator ${message.kind} ${JSON.stringify(normalize(message)).slice(0, 60)}`, () => {
            const decoded = decodeCoordinatorMessage(encodeMessage(message));
            assert.deepEqual(normalize(decoded), normalize(message));
        });
    }

    it("bytes come back as Uint8Array copies that do not alias the frame", () => {
        const frame = encodeMessage({kind: "kv_set", id: 1, key: "k", value: new Uint8Array([1, 2, 3])});
        const decoded = decodeDaemonMessage(frame);
        assert.equal(decoded.kind, "kv_set");
        if (decoded.kind !== "kv_set") return;
        assert.ok(decoded.value instanceof Uint8Array);
        assert.equal(decoded.value.byteLength, 3);
        assert.equal(decoded.value.buffer.byteLength, 3, "the value owns its memory");
        frame.fill(0);
        assert.deepEqual(Array.from(decoded.value), [1, 2, 3]);
    });

    it("a Buffer value encodes like a Uint8Array", () => {
        const decoded = decodeDaemonMessage(encodeMessage({kind: "kv_set", id: 1, key: "k", value: Buffer.from("hi")}));
        assert.ok(decoded.kind === "kv_set" && Buffer.from(decoded.value).toString() === "hi");
    });

    it("optional fields set to undefined are left out", () => {
        const message = {kind: "failure", message: "x", stack: undefined} as unknown as AnyMessage;
        assert.deepEqual(decodeDaemonMessage(encodeMessage(message)), {kind: "failure", message: "x"});
    });

    it("encoding refuses a message the peer would reject", () => {
        protocolErrorOf(() => encodeMessage({kind: "kv_get", id: -1, key: "k"}));
        protocolErrorOf(() => encodeMessage({kind: "metrics", step: 1, stepTimeMs: Number.NaN}));
    });
});

describe("direction", () => {
    it("a coordinator message is not a daemon message and vice versa", () => {
        for (const message of coordinatorMessages) {
            assert.match(protocolErrorOf(() => decodeDaemonMessage(encodeMessage(message))).message, /coordinator message/);
        }
        for (const message of daemonMessages) {
            assert.match(protocolErrorOf(() => decodeCoordinatorMessage(encodeMessage(message))).message, /daemon message/);
        }
    });
});

describe("malformed frames", () => {
    it("every proper prefix of every valid frame is refused", () => {
        for (const message of [...daemonMessages, ...coordinatorMessages]) {
            const frame = encodeMessage(message);
            // The 1 MiB value: every prefix would take long; its header and tail cover the cases.
            const cuts = frame.byteLength > 4096
                ? [...Array.from({length: 64}, (_, i) => i), frame.byteLength - 2, frame.byteLength - 1]
                : Array.from({length: frame.byteLength}, (_, i) => i);
            for (const cut of cuts) {
                const error = protocolErrorOf(() => decodeAny(frame.subarray(0, cut)));
                if (cut > 0) assert.match(error.message, /truncated|not valid msgpack/, `cut at ${cut} of ${message.kind}`);
            }
        }
    });

    it("a frame with bytes after the value is refused", () => {
        const frame = encodeMessage({kind: "heartbeat", seq: 1});
        protocolErrorOf(() => decodeDaemonMessage(Buffer.concat([frame, Buffer.from([0xc0])])));
        protocolErrorOf(() => decodeDaemonMessage(Buffer.concat([frame, frame])));
    });

    it("random garbage never escapes as another exception type", () => {
        const next = random(1);
        for (let i = 0; i < 3000; i++) {
            const length = 1 + Math.floor(next() * 64);
            const frame = Buffer.from(Array.from({length}, () => Math.floor(next() * 256)));
            protocolErrorOf(() => decodeDaemonMessage(frame));
            protocolErrorOf(() => decodeCoordinatorMessage(frame));
        }
    });

    it("valid frames with flipped bytes decode to a valid message or fail with a protocol error", () => {
        const next = random(2);
        const frames = [...daemonMessages.filter((m) => m.kind !== "kv_set" || m.value.byteLength < 100), ...coordinatorMessages].map(encodeMessage);
        for (let i = 0; i < 5000; i++) {
            const frame = Buffer.from(frames[i % frames.length]!);
            const flips = 1 + Math.floor(next() * 3);
            for (let f = 0; f < flips; f++) frame[Math.floor(next() * frame.byteLength)] = Math.floor(next() * 256);
            for (const decode of [decodeDaemonMessage, decodeCoordinatorMessage]) {
                try {
                    decode(frame);
                } catch (error) {
                    assert.ok(error instanceof MixzError && error.code === ErrorCodes.protocol, `frame ${frame.toString("hex")}: ${String(error)}`);
                }
            }
        }
    });

    it("hand-made hostile msgpack is refused", () => {
        const cases: Array<[string, number[]]> = [
            ["0xc1 (never used)", [0xc1]],
            ["array32 claiming 4 billion items", [0xdd, 0xff, 0xff, 0xff, 0xff]],
            ["map32 claiming 4 billion entries", [0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 0x61, 0x01]],
            ["str32 claiming 4 GiB", [0xdb, 0xff, 0xff, 0xff, 0xff, 0x61]],
            ["bin32 claiming 4 GiB", [0xc6, 0xff, 0xff, 0xff, 0xff, 0x00]],
            ["record definition", [0xd4, 0x72, 0x40]],
            ["structured-clone pointer", [0xc7, 0x01, 0x70, 0x00]],
            ["unknown extension", [0xd4, 0x33, 0x00]],
            ["error extension without data", [0xd4, 0x65, 0x00]],
            ["nil", [0xc0]],
            ["a string", [0xa3, 0x61, 0x62, 0x63]],
            ["text that is not msgpack", Array.from(Buffer.from("GET / HTTP/1.1\r\n\r\n"))],
            ["an empty map", [0x80]]
        ];
        for (const [what, bytes] of cases) {
            protocolErrorOf(() => decodeDaemonMessage(Buffer.from(bytes)));
            assert.ok(true, what);
        }
    });

    it("deep nesting (stack overflow in the decoder) is a protocol error", () => {
        const depth = 200_000;
        const frame = Buffer.alloc(depth + 1, 0x91);
        frame[depth] = 0xc0;
        protocolErrorOf(() => decodeDaemonMessage(frame));
    });

    it("an empty frame and non-bytes are refused", () => {
        protocolErrorOf(() => decodeDaemonMessage(new Uint8Array(0)));
        protocolErrorOf(() => decodeDaemonMessage("hello" as unknown as Uint8Array));
        protocolErrorOf(() => decodeDaemonMessage(null as unknown as Uint8Array));
    });
});

describe("shape checks", () => {
    it("the top level must be a map with a string kind of this direction", () => {
        for (const value of [null, 1, "hello", [hello], true]) protocolErrorOf(() => decodeDaemonMessage(raw(value)));
        assert.match(protocolErrorOf(() => decodeDaemonMessage(raw({seq: 1}))).message, /"kind"/);
        assert.match(protocolErrorOf(() => decodeDaemonMessage(raw({kind: 7, seq: 1}))).message, /"kind"/);
        assert.match(protocolErrorOf(() => decodeDaemonMessage(raw({kind: "launch_missiles"}))).message, /unknown message kind "launch_missiles"/);
        assert.match(protocolErrorOf(() => decodeDaemonMessage(raw({kind: "constructor"}))).message, /unknown message kind/);
        assert.match(protocolErrorOf(() => decodeDaemonMessage(raw({kind: "__proto__"}))).message, /unknown message kind/);
        assert.ok(protocolErrorOf(() => decodeDaemonMessage(raw({kind: "x".repeat(100_000)}))).message.length < 300, "a huge kind is not quoted whole");
    });

    it("missing fields are named", () => {
        const {token: _token, ...withoutToken} = hello as Extract<DaemonMessage, {kind: "hello"}>;
        assert.match(protocolErrorOf(() => decodeDaemonMessage(raw(withoutToken))).message, /lacks field "token"/);
        assert.match(protocolErrorOf(() => decodeDaemonMessage(raw({kind: "kv_set", id: 1, key: "k"}))).message, /lacks field "value"/);
        assert.match(protocolErrorOf(() => decodeCoordinatorMessage(raw({kind: "reply", id: 1, ok: false, code: "X"}))).message, /lacks field "message"/);
    });

    it("unknown fields are refused", () => {
        assert.match(protocolErrorOf(() => decodeDaemonMessage(raw({kind: "heartbeat", seq: 1, extra: 1}))).message, /unknown field "extra"/);
        assert.match(protocolErrorOf(() => decodeDaemonMessage(raw({kind: "heartbeat", seq: 1, __proto__x: 1}))).message, /unknown field/);
        // msgpackr renames a "__proto__" key (no prototype pollution); it is still an unknown field.
        const polluted = Buffer.concat([Buffer.from([0x83]), raw("kind"), raw("heartbeat"), raw("seq"), raw(1), raw("__proto__"), raw({admin: true})]);
        assert.match(protocolErrorOf(() => decodeDaemonMessage(polluted)).message, /unknown field/);
        assert.equal(({} as Record<string, unknown>)["admin"], undefined);
        assert.match(protocolErrorOf(() => decodeCoordinatorMessage(raw({kind: "reply", id: 1, ok: true, code: "X"}))).message, /unknown field "code"/);
    });

    const wrongFields: Array<[string, Record<string, unknown>, RegExp]> = [
        ["rank negative", {...hello, rank: -1}, /"rank"/],
        ["rank fractional", {...hello, rank: 1.5}, /"rank"/],
        ["rank as string", {...hello, rank: "1"}, /"rank"/],
        ["rank as 64-bit integer", {...hello, rank: 1n}, /"rank"/],
        ["pid zero", {...hello, pid: 0}, /"pid"/],
        ["empty token", {...hello, token: ""}, /"token"/],
        ["token as bytes", {...hello, token: Buffer.from("t")}, /"token"/],
        ["host too long", {...hello, host: "h".repeat(kMaxNameChars + 1)}, /"host"/],
        ["key too long", {kind: "kv_get", id: 1, key: "k".repeat(kMaxNameChars + 1)}, /"key"/],
        ["key of 10 million characters", {kind: "kv_get", id: 1, key: "k".repeat(10_000_000)}, /"key"/],
        ["id negative", {kind: "kv_get", id: -1, key: "k"}, /"id"/],
        ["id NaN", {kind: "kv_get", id: Number.NaN, key: "k"}, /"id"/],
        ["value as string", {kind: "kv_set", id: 1, key: "k", value: "abc"}, /"value"/],
        ["value as array of numbers", {kind: "kv_set", id: 1, key: "k", value: [1, 2]}, /"value"/],
        ["value nil", {kind: "kv_set", id: 1, key: "k", value: null}, /"value"/],
        ["keys not an array", {kind: "kv_wait", id: 1, keys: "a", timeoutMs: 10}, /"keys"/],
        ["keys with a number", {kind: "kv_wait", id: 1, keys: ["a", 1], timeoutMs: 10}, /"keys"/],
        ["keys with an empty key", {kind: "kv_wait", id: 1, keys: [""], timeoutMs: 10}, /"keys"/],
        ["timeout zero", {kind: "kv_wait", id: 1, keys: ["a"], timeoutMs: 0}, /"timeoutMs"/],
        ["timeout negative", {kind: "barrier", id: 1, name: "b", timeoutMs: -5}, /"timeoutMs"/],
        ["timeout above 24 h", {kind: "barrier", id: 1, name: "b", timeoutMs: kMaxTimeoutMs + 1}, /"timeoutMs"/],
        ["timeout infinite", {kind: "barrier", id: 1, name: "b", timeoutMs: Number.POSITIVE_INFINITY}, /"timeoutMs"/],
        ["timeout NaN", {kind: "barrier", id: 1, name: "b", timeoutMs: Number.NaN}, /"timeoutMs"/],
        ["step negative", {kind: "metrics", step: -1}, /"step"/],
        ["tokensPerSec infinite", {kind: "metrics", step: 1, tokensPerSec: Number.POSITIVE_INFINITY}, /"tokensPerSec"/],
        ["loss as string", {kind: "metrics", step: 1, loss: "2.5"}, /"loss"/],
        ["failure message too long", {kind: "failure", message: "m".repeat(kMaxTextChars + 1)}, /"message"/],
        ["stack nil", {kind: "failure", message: "m", stack: null}, /"stack"/],
        ["exit code 256", {kind: "bye", exitCode: 256}, /"exitCode"/],
        ["exit code negative", {kind: "bye", exitCode: -1}, /"exitCode"/],
        ["heartbeat seq as a date", {kind: "heartbeat", seq: new Date()}, /"seq"/]
    ];
    for (const [what, message, field] of wrongFields) {
        it(`daemon: ${what}`, () => {
            const error = protocolErrorOf(() => decodeDaemonMessage(raw(message)));
            assert.match(error.message, field);
            assert.ok(error.message.length < 400, "the error never quotes a huge value");
        });
    }

    const wrongCoordinatorFields: Array<[string, Record<string, unknown>, RegExp]> = [
        ["world size zero", {kind: "welcome", rank: 0, worldSize: 0}, /"worldSize"/],
        ["ok not a boolean", {kind: "reply", id: 1, ok: 1}, /"ok"/],
        ["values with a string", {kind: "reply", id: 1, ok: true, values: ["x"]}, /"values"/],
        ["error code empty", {kind: "reply", id: 1, ok: false, code: "", message: "m"}, /"code"/],
        ["abort reason missing", {kind: "abort", code: "X"}, /"reason"/],
        ["ready with a field", {kind: "ready", now: 1}, /unknown field "now"/]
    ];
    for (const [what, message, field] of wrongCoordinatorFields) {
        it(`coordinator: ${what}`, () => {
            assert.match(protocolErrorOf(() => decodeCoordinatorMessage(raw(message))).message, field);
        });
    }

    it("names at the length limit pass", () => {
        const key = "k".repeat(kMaxNameChars);
        assert.equal((decodeDaemonMessage(encodeMessage({kind: "kv_get", id: 1, key})) as {key: string}).key, key);
    });

    it("msgpackr extension types (dates, sets, typed arrays other than bytes) are refused", () => {
        const rich = new Packr({useRecords: false, moreTypes: true});
        protocolErrorOf(() => decodeDaemonMessage(rich.pack({kind: "heartbeat", seq: new Date(0)})));
        protocolErrorOf(() => decodeDaemonMessage(rich.pack({kind: "kv_wait", id: 1, keys: new Set(["a"]), timeoutMs: 5})));
        protocolErrorOf(() => decodeDaemonMessage(rich.pack({kind: "kv_set", id: 1, key: "k", value: new Float64Array([1])})));
    });

    it("a hello of another protocol version names both versions before any shape check", () => {
        const error = protocolErrorOf(() => decodeDaemonMessage(raw({kind: "hello", protocol: PROTOCOL_VERSION + 1, token: 5, whatever: true})));
        assert.match(error.message, new RegExp(`protocol ${PROTOCOL_VERSION + 1}, this side speaks ${PROTOCOL_VERSION}`));
    });
});

describe("truncateText", () => {
    it("keeps short text and cuts long text to the limit with a marker", () => {
        assert.equal(truncateText("abc", 10), "abc");
        const cut = truncateText("x".repeat(1000), 100);
        assert.ok(cut.length <= 100);
        assert.match(cut, /… \(\d+ more characters\)$/);
        assert.ok(truncateText("y".repeat(kMaxTextChars * 2)).length <= kMaxTextChars);
        assert.equal(truncateText("abcdef", 3), "abc");
    });
});

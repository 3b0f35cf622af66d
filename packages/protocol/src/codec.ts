/**
 * The wire codec: one msgpack value per WebSocket binary frame, shape-checked on the way in.
 *
 * Vocabulary: a *frame* is the bytes of one WebSocket message; a *message* is the decoded,
 * validated member of the union in messages.ts. Decoding is the trust boundary of the coordinator
 * (anyone who can reach its port can send frames), so every field is checked here — type,
 * integer-ness, range, string length — and nothing but a MixzError(MIXZ_ERR_PROTOCOL) ever leaves
 * decode*(): msgpackr's own errors (truncated data, bad extensions, stack overflow on deep
 * nesting, RangeError from absurd array lengths) are wrapped, never rethrown as they are.
 *
 * Objects must carry exactly the fields of their kind: an unknown field is an error, not ignored.
 * Both ends of a job run the same installation (PROTOCOL_VERSION must match), so there is no
 * forward compatibility to preserve, and strictness catches mismatched builds early.
 */
import {Packr} from "msgpackr";
import {ErrorCodes, MixzError} from "./errors.js";
import {PROTOCOL_VERSION, type AnyMessage, type CoordinatorMessage, type DaemonMessage} from "./messages.js";

/** Longest key, barrier name, token, job id, host name, version or error code (UTF-16 units). */
export const kMaxNameChars = 1024;
/** Longest free text: a failure message or stack, an abort or reject reason, an error reply. */
export const kMaxTextChars = 64 * 1024;
/** Longest wait or barrier timeout a request may ask for: 24 hours. */
export const kMaxTimeoutMs = 24 * 60 * 60 * 1000;
/** Most keys one kv_wait may name (a world of this many ranks each publishing one address). */
export const kMaxWaitKeys = 65536;
/** Largest rank or world size the protocol carries. */
export const kMaxWorldSize = 1 << 20;

/**
 * useRecords:false keeps every object a plain msgpack map (records are a msgpackr extension other
 * decoders cannot read, and they would make the decoder stateful). copyBuffers:true makes every
 * decoded bin value its own Uint8Array instead of a view into the frame: the key-value store keeps
 * values for the whole job, and a view would pin (and alias) the frame it came from.
 * structuredClone:false makes the decoder refuse msgpackr's reference extensions (0x69/0x70),
 * which could otherwise build cyclic graphs out of hostile input.
 */
const packr = new Packr({useRecords: false, mapsAsObjects: true, copyBuffers: true, structuredClone: false, moreTypes: false});

/** Encodes one message. Validates it first: a message the peer would reject is a bug here. */
export function encodeMessage(message: AnyMessage): Uint8Array {
    // Optional fields set to `undefined` would otherwise travel as msgpack's "undefined" extension
    // and fail validation on the other side; a missing field is what the union means.
    const plain: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(message)) {
        if (value !== undefined) plain[key] = value;
    }
    validateMessage(plain, "any");
    return packr.pack(plain);
}

/** Decodes a frame sent by a rank daemon; throws MixzError(MIXZ_ERR_PROTOCOL) on anything else. */
export function decodeDaemonMessage(frame: Uint8Array): DaemonMessage {
    return validateMessage(unpackFrame(frame), "daemon") as DaemonMessage;
}

/** Decodes a frame sent by the coordinator; throws MixzError(MIXZ_ERR_PROTOCOL) on anything else. */
export function decodeCoordinatorMessage(frame: Uint8Array): CoordinatorMessage {
    return validateMessage(unpackFrame(frame), "coordinator") as CoordinatorMessage;
}

function protocolError(message: string, context: Record<string, unknown> = {}, cause?: unknown): MixzError {
    return new MixzError(ErrorCodes.protocol, message, cause === undefined ? {category: "infra", context} : {category: "infra", context, cause});
}

function unpackFrame(frame: Uint8Array): unknown {
    if (!(frame instanceof Uint8Array)) throw protocolError(`a frame must be bytes, got ${describe(frame)}`);
    if (frame.byteLength === 0) throw protocolError("empty frame");
    try {
        return packr.unpack(frame);
    } catch (error) {
        // msgpackr marks errors caused by data ending too early; say so, it is the common case
        // (a frame cut by a broken peer) and the rest is garbage of many shapes.
        const incomplete = typeof error === "object" && error !== null && (error as {incomplete?: unknown}).incomplete === true;
        const detail = error instanceof Error ? error.message : String(error);
        throw protocolError(
            incomplete
                ? `truncated frame: the msgpack data of ${frame.byteLength} bytes ends in the middle of a value`
                : `frame of ${frame.byteLength} bytes is not valid msgpack: ${truncate(detail, 200)}`,
            {bytes: frame.byteLength},
            error
        );
    }
}

// ---------------------------------------------------------------------------------------------
// shape checks

/** Checks one field's value; returns a description of what was expected when it does not fit. */
type Check = (value: unknown) => string | undefined;

interface Field {
    readonly check: Check;
    readonly optional?: boolean;
}

function integer(min: number, max: number): Check {
    return (value) =>
        typeof value === "number" && Number.isInteger(value) && value >= min && value <= max
            ? undefined
            : `an integer in [${min}, ${max}]`;
}

function name(value: unknown): string | undefined {
    return typeof value === "string" && value.length > 0 && value.length <= kMaxNameChars
        ? undefined
        : `a non-empty string of at most ${kMaxNameChars} characters`;
}

function text(value: unknown): string | undefined {
    return typeof value === "string" && value.length <= kMaxTextChars ? undefined : `a string of at most ${kMaxTextChars} characters`;
}

function bytes(value: unknown): string | undefined {
    return value instanceof Uint8Array ? undefined : "bytes (msgpack bin)";
}

function timeout(value: unknown): string | undefined {
    return typeof value === "number" && Number.isFinite(value) && value > 0 && value <= kMaxTimeoutMs
        ? undefined
        : `a number of milliseconds > 0 and ≤ ${kMaxTimeoutMs} (24 h)`;
}

function nonNegativeFinite(value: unknown): string | undefined {
    return typeof value === "number" && Number.isFinite(value) && value >= 0 ? undefined : "a finite number ≥ 0";
}

/**
 * A loss may legitimately be NaN or infinite (a diverging run); reporting it must not look like a
 * protocol violation and get the rank disconnected.
 */
function anyNumber(value: unknown): string | undefined {
    return typeof value === "number" ? undefined : "a number";
}

function keyList(value: unknown): string | undefined {
    if (!Array.isArray(value) || value.length > kMaxWaitKeys) return `an array of at most ${kMaxWaitKeys} keys`;
    for (const item of value) {
        if (name(item) !== undefined) return `an array of non-empty strings of at most ${kMaxNameChars} characters`;
    }
    return undefined;
}

function valueList(value: unknown): string | undefined {
    if (!Array.isArray(value) || value.length > kMaxWaitKeys) return `an array of at most ${kMaxWaitKeys} values`;
    for (const item of value) {
        if (item !== null && !(item instanceof Uint8Array)) return "an array of bytes or nil";
    }
    return undefined;
}

function literal(expected: unknown): Check {
    return (value) => (value === expected ? undefined : JSON.stringify(expected));
}

const requestId = integer(0, Number.MAX_SAFE_INTEGER);
const sequence = integer(0, Number.MAX_SAFE_INTEGER);
const rank = integer(0, kMaxWorldSize - 1);
const required = (check: Check): Field => ({check});
const optional = (check: Check): Field => ({check, optional: true});

type Schema = Readonly<Record<string, Field>>;

const daemonSchemas: Readonly<Record<DaemonMessage["kind"], Schema>> = {
    hello: {
        protocol: required(integer(0, 0xffff_ffff)),
        token: required(name),
        jobId: required(name),
        rank: required(rank),
        host: required(name),
        pid: required(integer(1, 0xffff_ffff)),
        mixzVersion: required(name)
    },
    kv_set: {id: required(requestId), key: required(name), value: required(bytes)},
    kv_get: {id: required(requestId), key: required(name)},
    kv_wait: {id: required(requestId), keys: required(keyList), timeoutMs: required(timeout)},
    barrier: {id: required(requestId), name: required(name), timeoutMs: required(timeout)},
    heartbeat: {seq: required(sequence)},
    metrics: {
        step: required(integer(0, Number.MAX_SAFE_INTEGER)),
        loss: optional(anyNumber),
        tokensPerSec: optional(nonNegativeFinite),
        stepTimeMs: optional(nonNegativeFinite),
        gatherMs: optional(nonNegativeFinite),
        computeMs: optional(nonNegativeFinite),
        reduceMs: optional(nonNegativeFinite),
        intraNodeBytes: optional(nonNegativeFinite),
        crossNodeBytes: optional(nonNegativeFinite)
    },
    failure: {message: required(text), stack: optional(text)},
    // Exit statuses are 8 bits; the daemon maps a signal n to 128 + n before saying bye.
    bye: {exitCode: required(integer(0, 255))}
};

const replyOk: Schema = {id: required(requestId), ok: required(literal(true)), values: optional(valueList)};
const replyError: Schema = {id: required(requestId), ok: required(literal(false)), code: required(name), message: required(text)};

const coordinatorSchemas: Readonly<Record<Exclude<CoordinatorMessage["kind"], "reply">, Schema>> = {
    welcome: {rank: required(rank), worldSize: required(integer(1, kMaxWorldSize))},
    ready: {},
    heartbeat_ack: {seq: required(sequence)},
    abort: {code: required(name), reason: required(text)},
    reject: {code: required(name), message: required(text)}
};

function isPlainObject(value: unknown): value is Record<string, unknown> {
    if (typeof value !== "object" || value === null) return false;
    const prototype: unknown = Object.getPrototypeOf(value);
    return prototype === Object.prototype || prototype === null;
}

function schemaFor(kind: string, direction: "daemon" | "coordinator" | "any", object: Record<string, unknown>): Schema {
    const fromDaemon = Object.hasOwn(daemonSchemas, kind) ? daemonSchemas[kind as DaemonMessage["kind"]] : undefined;
    const fromCoordinator = kind === "reply"
        ? object["ok"] === false ? replyError : replyOk
        : Object.hasOwn(coordinatorSchemas, kind) ? coordinatorSchemas[kind as keyof typeof coordinatorSchemas] : undefined;
    if (direction === "daemon") {
        if (fromDaemon !== undefined) return fromDaemon;
        if (fromCoordinator !== undefined) throw protocolError(`"${kind}" is a coordinator message; a daemon may not send it`, {kind});
    } else if (direction === "coordinator") {
        if (fromCoordinator !== undefined) return fromCoordinator;
        if (fromDaemon !== undefined) throw protocolError(`"${kind}" is a daemon message; the coordinator may not send it`, {kind});
    } else {
        const schema = fromDaemon ?? fromCoordinator;
        if (schema !== undefined) return schema;
    }
    throw protocolError(`unknown message kind ${JSON.stringify(truncate(kind, 64))}`, {kind: truncate(kind, 64)});
}

function validateMessage(value: unknown, direction: "daemon" | "coordinator" | "any"): AnyMessage {
    if (!isPlainObject(value)) throw protocolError(`a message must be a msgpack map, got ${describe(value)}`);
    const kind = value["kind"];
    if (typeof kind !== "string") throw protocolError(`a message needs a string "kind", got ${describe(kind)}`);
    // A hello of another protocol version may have another shape: name the versions before the
    // shape check, so that a stale installation is reported as one and not as garbage.
    if (kind === "hello" && typeof value["protocol"] === "number" && value["protocol"] !== PROTOCOL_VERSION) {
        throw protocolError(
            `protocol version mismatch: the peer speaks mixz protocol ${describe(value["protocol"])}, this side speaks ${PROTOCOL_VERSION} (a stale or foreign mixz installation)`,
            {peerProtocol: value["protocol"], protocol: PROTOCOL_VERSION}
        );
    }
    const schema = schemaFor(kind, direction, value);
    for (const [field, spec] of Object.entries(schema)) {
        const fieldValue = value[field];
        if (fieldValue === undefined && !Object.hasOwn(value, field)) {
            if (spec.optional === true) continue;
            throw protocolError(`${kind} message lacks field "${field}"`, {kind, field});
        }
        const expected = spec.check(fieldValue);
        if (expected !== undefined) {
            throw protocolError(`${kind} message: field "${field}" must be ${expected}, got ${describe(fieldValue)}`, {kind, field});
        }
    }
    for (const field of Object.keys(value)) {
        if (field !== "kind" && !Object.hasOwn(schema, field)) {
            throw protocolError(`${kind} message has an unknown field ${JSON.stringify(truncate(field, 64))}`, {kind, field: truncate(field, 64)});
        }
    }
    return value as unknown as AnyMessage;
}

/** A short, safe description of a value for an error message (never the whole of a huge string). */
function describe(value: unknown): string {
    if (value === null) return "nil";
    if (value === undefined) return "nothing";
    if (typeof value === "string") {
        return value.length > 64 ? `a string of ${value.length} characters` : JSON.stringify(value);
    }
    if (typeof value === "number" || typeof value === "boolean") return String(value);
    if (typeof value === "bigint") return `${value}n (a 64-bit integer)`;
    if (value instanceof Uint8Array) return `${value.byteLength} bytes`;
    if (Array.isArray(value)) return `an array of ${value.length}`;
    if (typeof value === "object") {
        const prototype: unknown = Object.getPrototypeOf(value);
        const constructorName = typeof prototype === "object" && prototype !== null && typeof (prototype as {constructor?: unknown}).constructor === "function"
            ? String((prototype as {constructor: {name: unknown}}).constructor.name)
            : "";
        return constructorName === "" || constructorName === "Object" ? "a map" : `a ${constructorName}`;
    }
    return typeof value;
}

function truncate(text: string, max: number): string {
    return text.length <= max ? text : `${text.slice(0, max)}…`;
}

/**
 * Shortens free text to fit a message field (kMaxTextChars by default), marking the cut. Daemons
 * use it on failure messages and stacks, which can be arbitrarily long.
 */
export function truncateText(text: string, max = kMaxTextChars): string {
    if (text.length <= max) return text;
    if (max < 40) return text.slice(0, max);
    // 40 characters hold the marker for any length a string can have.
    const keep = Math.max(0, max - 40);
    return `${text.slice(0, keep)}… (${text.length - keep} more characters)`;
}

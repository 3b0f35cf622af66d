/**
 * Every message between a rank daemon and the coordinator, as one discriminated union on `kind`.
 *
 * Wire format: one msgpack value per WebSocket binary frame (codec.ts). The first frame of every
 * connection must be `hello`, carrying the job's secret token and PROTOCOL_VERSION; anything else
 * ends the connection. Bump PROTOCOL_VERSION on any incompatible change; the launcher and every
 * daemon of a job run the same installation, so a mismatch means a stale or foreign install.
 */
export const PROTOCOL_VERSION = 1;

/** Largest frame either side accepts (ws maxPayload). Rendezvous values are small addresses. */
export const kMaxFrameBytes = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// daemon → coordinator

/** First frame of a connection: who this is and the proof that it belongs to the job. */
export interface HelloMessage {
    readonly kind: "hello";
    readonly protocol: number;
    /** The job's secret (random per launch; reaches daemons on stdin, never on a command line). */
    readonly token: string;
    readonly jobId: string;
    readonly rank: number;
    /** The plan's host name of this rank's node. */
    readonly host: string;
    readonly pid: number;
    /** The daemon's mixz version; must equal the launcher's. */
    readonly mixzVersion: string;
}

/** Store `value` under `key` (overwrites). Replied with an empty `reply`. */
export interface KvSetMessage {
    readonly kind: "kv_set";
    readonly id: number;
    readonly key: string;
    readonly value: Uint8Array;
}

/** Read `key` now: `reply.values` is `[value]` or `[null]` when it is not set. */
export interface KvGetMessage {
    readonly kind: "kv_get";
    readonly id: number;
    readonly key: string;
}

/** Wait until every key is set, then reply with their values in order; error reply on timeout. */
export interface KvWaitMessage {
    readonly kind: "kv_wait";
    readonly id: number;
    readonly keys: readonly string[];
    readonly timeoutMs: number;
}

/**
 * Wait until every rank of the world has entered the barrier `name` (the n-th call of a rank to a
 * name meets the n-th call of every other rank), then reply; error reply naming the missing ranks
 * on timeout.
 */
export interface BarrierMessage {
    readonly kind: "barrier";
    readonly id: number;
    readonly name: string;
    readonly timeoutMs: number;
}

/** Sent by the daemon's main JS thread every heartbeat interval: a stuck script stops sending. */
export interface HeartbeatMessage {
    readonly kind: "heartbeat";
    readonly seq: number;
}

/** Per-step metrics of a rank, for the launcher's progress line. */
export interface MetricsMessage {
    readonly kind: "metrics";
    readonly step: number;
    readonly loss?: number;
    readonly tokensPerSec?: number;
    readonly stepTimeMs?: number;
    readonly gatherMs?: number;
    readonly computeMs?: number;
    readonly reduceMs?: number;
    /** Bytes this rank received in the step from ranks on its own host, and from other hosts. */
    readonly intraNodeBytes?: number;
    readonly crossNodeBytes?: number;
}

/** The script threw: what and where, before the daemon exits non-zero (torchrun's error file). */
export interface FailureMessage {
    readonly kind: "failure";
    readonly message: string;
    readonly stack?: string;
}

/** The script finished; the process exits with `exitCode` right after this frame. */
export interface ByeMessage {
    readonly kind: "bye";
    readonly exitCode: number;
}

export type DaemonMessage =
    | HelloMessage
    | KvSetMessage
    | KvGetMessage
    | KvWaitMessage
    | BarrierMessage
    | HeartbeatMessage
    | MetricsMessage
    | FailureMessage
    | ByeMessage;

// ---------------------------------------------------------------------------------------------
// coordinator → daemon

/** The hello was accepted. */
export interface WelcomeMessage {
    readonly kind: "welcome";
    readonly rank: number;
    readonly worldSize: number;
}

/** Every rank of the world has joined: the script may start. */
export interface ReadyMessage {
    readonly kind: "ready";
}

/** Answer to a request with the same `id`. */
export type ReplyMessage =
    | {readonly kind: "reply"; readonly id: number; readonly ok: true; readonly values?: ReadonlyArray<Uint8Array | null>}
    | {readonly kind: "reply"; readonly id: number; readonly ok: false; readonly code: string; readonly message: string};

export interface HeartbeatAckMessage {
    readonly kind: "heartbeat_ack";
    readonly seq: number;
}

/** The job is ending (another rank failed, Ctrl-C, join timeout): stop now. */
export interface AbortMessage {
    readonly kind: "abort";
    readonly code: string;
    readonly reason: string;
}

/** The connection is refused (bad token, version, duplicate rank…); the socket closes after it. */
export interface RejectMessage {
    readonly kind: "reject";
    readonly code: string;
    readonly message: string;
}

export type CoordinatorMessage =
    | WelcomeMessage
    | ReadyMessage
    | ReplyMessage
    | HeartbeatAckMessage
    | AbortMessage
    | RejectMessage;

export type AnyMessage = DaemonMessage | CoordinatorMessage;

/**
 * Types of the coordinator subsystem: what the launcher passes in and what it hears back, and the
 * options of the client that rank daemons use. Implementations live in Coordinator.ts and
 * CoordinatorClient.ts.
 */
import type {MetricsMessage, MixzError} from "@mixz/protocol";
import type {Logger} from "@mixz/log";

/** One rank of the plan and the host (as the plan names it) it must join from. */
export interface PlannedRank {
    readonly rank: number;
    readonly host: string;
}

export interface CoordinatorOptions {
    /** Address to listen on (`--master-addr`); "0.0.0.0" or "::" for every interface. */
    readonly host: string;
    /** Port to listen on (`--master-port`); 0 picks a free one (read it back from `port`). */
    readonly port: number;
    /** The job's secret; every connection must present it in its hello. */
    readonly token: string;
    readonly jobId: string;
    /** The plan: ranks 0..W−1, each exactly once; the world size is its length. */
    readonly ranks: ReadonlyArray<PlannedRank>;
    /** Counted from start(); when it passes before every rank joined, `join_timeout` is emitted. */
    readonly joinTimeoutMs: number;
    /** Daemons send one heartbeat per interval. */
    readonly heartbeatIntervalMs: number;
    /** A rank is lost after this many intervals without any frame from it. */
    readonly heartbeatMisses: number;
    /** Largest accepted frame (ws maxPayload); default kMaxFrameBytes. */
    readonly maxFrameBytes?: number;
    /** A connection must say hello within this (default 10 s), and a TCP connection must upgrade within it. */
    readonly helloTimeoutMs?: number;
    /** When set, a hello whose mixzVersion differs is rejected with MIXZ_ERR_VERSION_MISMATCH. */
    readonly mixzVersion?: string;
    readonly logger: Logger;
    /** Called synchronously for every event; an exception it throws is logged and swallowed. */
    readonly onEvent: (event: CoordinatorEvent) => void;
}

/**
 * What the coordinator tells the launcher. Events stop once close() is called. After abort() the
 * heartbeat check stops (ranks told to stop stop heartbeating), but disconnects are still reported
 * as `lost` while ranks are torn down: the launcher treats those as consequences, not causes.
 */
export type CoordinatorEvent =
    | {readonly type: "joined"; readonly rank: number; readonly host: string; readonly pid: number}
    /** Every rank of the plan has joined; `ready` was broadcast. */
    | {readonly type: "ready"}
    /** The join deadline passed; later hellos are rejected. The launcher should abort. */
    | {readonly type: "join_timeout"; readonly missing: ReadonlyArray<PlannedRank>}
    /**
     * `heartbeat`: nothing received from the rank for heartbeatIntervalMs × heartbeatMisses.
     * `disconnected`: its connection closed without a prior `bye` (including a connection the
     * coordinator closed because the rank sent a malformed or oversized frame).
     * Reported at most once per rank.
     */
    | {readonly type: "lost"; readonly rank: number; readonly host: string; readonly reason: "heartbeat" | "disconnected"}
    | {readonly type: "bye"; readonly rank: number; readonly exitCode: number}
    | {readonly type: "failure"; readonly rank: number; readonly message: string; readonly stack?: string}
    | {readonly type: "metrics"; readonly rank: number; readonly metrics: MetricsMessage}
    /** A connection was refused (for logging only: it never disturbs the job). */
    | {readonly type: "rejected"; readonly remote: string; readonly code: string; readonly message: string};

export interface CoordinatorClientOptions {
    /** The coordinator's `url` (ws://host:port/). */
    readonly url: string;
    readonly token: string;
    readonly jobId: string;
    readonly rank: number;
    /** The plan's name of this rank's host. */
    readonly host: string;
    readonly pid: number;
    readonly mixzVersion: string;
    /**
     * Budget for reaching the coordinator and being welcomed. Refused connections are retried with
     * backoff inside it: the daemon may start before the coordinator's address is reachable.
     */
    readonly connectTimeoutMs: number;
    /** After the welcome, how long to wait for `ready` (every rank joined). */
    readonly joinTimeoutMs: number;
    readonly heartbeatIntervalMs: number;
    /**
     * How long the coordinator may stay silent (no heartbeat_ack, nothing) before the connection is
     * declared lost; it catches a coordinator host that vanished without closing the TCP
     * connection. Default: the larger of 5 heartbeat intervals and 10 s.
     */
    readonly silenceTimeoutMs?: number;
    /** Local deadline for kv_set and kv_get replies (default 30 s). */
    readonly requestTimeoutMs?: number;
    readonly maxFrameBytes?: number;
    readonly logger?: Logger;
    /** The coordinator broadcast an abort (after connect() resolved). */
    readonly onAbort: (code: string, reason: string) => void;
    /** The connection was lost after connect() resolved (MIXZ_ERR_COORDINATOR_LOST). */
    readonly onLost: (error: MixzError) => void;
    readonly onHeartbeatAck?: () => void;
}

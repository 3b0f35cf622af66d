/**
 * The native types of the communicator exports (native/addon/AddonCommunicator.h). Part of
 * BindingModule (AddonTypes.ts); kept in their own module because they are many.
 *
 * Every descriptor is complete (no optional fields): @mixz/engine's Communicator validates the
 * user's options and fills in the defaults; the addon checks again and throws
 * MIXZ_ERR_INVALID_ARGUMENT synchronously. Buffers are typed arrays taken as bytes; reductions
 * read them by `dtype`.
 */
import type {NativeFloatDType} from "./AddonTypes.js";

/** Every typed array kind; collectives move their bytes. */
export type NativeCommBuffer =
    | Int8Array
    | Uint8Array
    | Uint8ClampedArray
    | Int16Array
    | Uint16Array
    | Int32Array
    | Uint32Array
    | Float32Array
    | Float64Array
    | BigInt64Array
    | BigUint64Array;

/** auto: shared memory within a host, Gloo TCP between hosts. shm / gloo: that transport only. */
export type NativeCommTransport = "auto" | "shm" | "gloo";

export type NativeReduceOp = "sum" | "mean" | "max";

/** `new Communicator(options)`: nothing is opened until prepare(). */
export interface NativeCommunicatorOptions {
    readonly rank: number;
    readonly worldSize: number;
    /** The plan's name of this rank's host. */
    readonly host: string;
    readonly jobId: string;
    /** The ranks on this host in local-rank order, including `rank`. */
    readonly localRanks: readonly number[];
    /** Bounds connect() and is every collective's default; an integer in [1, 2^31 - 1]. */
    readonly timeoutMs: number;
    readonly transport: NativeCommTransport;
    /** Where this rank's Gloo connections listen (a name or address of this machine). */
    readonly bindAddress: string;
}

/** Tag and timeout of one call. */
export interface NativeCallDescriptor {
    /** An integer in [0, 2^32 - 1]; members of one collective pass the same. */
    readonly tag: number;
    /** An integer in [1, 2^31 - 1]. */
    readonly timeoutMs: number;
}

export interface NativeGroupDescriptor extends NativeCallDescriptor {
    readonly kind: "hpz" | "cross";
    /** The hpZ group size (ignored for cross; pass 0). */
    readonly h: number;
}

export interface NativeAllGatherDescriptor extends NativeCallDescriptor {
    readonly input: NativeCommBuffer;
    readonly output: NativeCommBuffer;
}

export interface NativeAllGatherVDescriptor extends NativeAllGatherDescriptor {
    /** Bytes each member contributes, in member order. */
    readonly bytes: readonly number[];
}

/** The qwZ all-gather (native/include/mixz/comm/quantized_allgather.h). */
export interface NativeQuantizedAllGatherDescriptor extends NativeCallDescriptor {
    /** This member's partition: `elements` values of `dtype` (Float32Array or Uint16Array). */
    readonly input: NativeCommBuffer;
    /** size × elements values of `outDtype`. */
    readonly output: NativeCommBuffer;
    readonly dtype: NativeFloatDType;
    readonly outDtype: NativeFloatDType;
    readonly elements: number;
    readonly bits: 8 | 4;
    /** A power of two in [8, 65536]. */
    readonly blockSize: number;
    /** 0: the quantizer's default thread count. */
    readonly threads: number;
}

export interface NativeReduceDescriptor extends NativeCallDescriptor {
    readonly input: NativeCommBuffer;
    readonly output: NativeCommBuffer;
    /** Elements of the output. */
    readonly count: number;
    readonly dtype: NativeFloatDType;
    readonly op: NativeReduceOp;
}

export interface NativeBroadcastDescriptor extends NativeCallDescriptor {
    readonly buffer: NativeCommBuffer;
    readonly root: number;
}

/** One member of a communicator. */
export interface NativeCommMember {
    /** Global rank. */
    readonly rank: number;
    readonly host: string;
    readonly pid: number;
}

export interface NativeCommunicatorInfo {
    /** This rank's index among the members. */
    readonly rank: number;
    readonly size: number;
    readonly kind: "world" | "hpz" | "cross";
    /** "local", "shm", "gloo", "shm+gloo" (hierarchical), or "unconnected". */
    readonly transport: string;
    readonly members: readonly NativeCommMember[];
}

/** A native communicator (mixz::comm::Communicator). */
export interface NativeCommunicator {
    prepare(): Promise<Uint8Array>;
    connect(addresses: readonly Uint8Array[]): Promise<void>;
    group(descriptor: NativeGroupDescriptor): Promise<NativeCommunicator>;
    allGather(descriptor: NativeAllGatherDescriptor): Promise<void>;
    allGatherV(descriptor: NativeAllGatherVDescriptor): Promise<void>;
    /** Resolves with the bytes each member sent (codes and scales). */
    quantizedAllGather(descriptor: NativeQuantizedAllGatherDescriptor): Promise<number>;
    reduceScatter(descriptor: NativeReduceDescriptor): Promise<void>;
    allReduce(descriptor: NativeReduceDescriptor): Promise<void>;
    broadcast(descriptor: NativeBroadcastDescriptor): Promise<void>;
    barrier(descriptor: NativeCallDescriptor): Promise<void>;
    info(): NativeCommunicatorInfo;
    /** Fails the communicator here and for its shared-memory peers. */
    abort(reason: string): void;
    /** Drops the native communicator once no call is in flight; later calls throw. */
    close(): void;
}

export interface NativeCommunicatorConstructor {
    new (options: NativeCommunicatorOptions): NativeCommunicator;
}

/** Test support: `commSelfTest` runs the collective suite on `ranks` threads. */
export interface NativeCommSelfTestDescriptor {
    readonly ranks: number;
    readonly transport: NativeCommTransport;
    /** One plan host per rank, or empty for all on one host. */
    readonly hosts: readonly string[];
    readonly bindAddress: string;
    /** Element counts per member chunk. */
    readonly counts: readonly number[];
    readonly dtypes: readonly NativeFloatDType[];
    readonly timeoutMs: number;
    /** Also build and exercise the hpZ and cross groups. */
    readonly groups: boolean;
    readonly jobId: string;
}

export interface NativeCommSelfTestReport {
    readonly checks: number;
    /** Up to 50 descriptions of wrong results. */
    readonly failures: readonly string[];
    readonly seconds: number;
    /** The world's transport on rank 0. */
    readonly transport: string;
}

/** Test support: `commFaultTest`, one rank (`victim`) misbehaves during an all-gather of `bytes`. */
export interface NativeCommFaultDescriptor {
    readonly ranks: number;
    readonly transport: NativeCommTransport;
    readonly timeoutMs: number;
    readonly jobId: string;
    /** stuck: never calls; closed: closes its communicator; mismatch: calls broadcast instead. */
    readonly fault: "stuck" | "closed" | "mismatch";
    readonly victim: number;
    readonly bytes: number;
}

export interface NativeCommFaultReport {
    /** Per rank: the error code, or "" when its call returned. */
    readonly codes: readonly string[];
    readonly messages: readonly string[];
    readonly seconds: readonly number[];
}

/** Test support: `commBenchmark`, all-gather timing on `ranks` threads. */
export interface NativeCommBenchmarkDescriptor {
    readonly ranks: number;
    readonly transport: NativeCommTransport;
    readonly timeoutMs: number;
    readonly jobId: string;
    readonly bytesPerRank: number;
    readonly iterations: number;
    readonly warmup: number;
}

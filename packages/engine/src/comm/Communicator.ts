/**
 * Collective communication between ranks: the TypeScript face of mixz::comm::Communicator
 * (native/include/mixz/comm/communicator.h).
 *
 * A communicator is built in two phases with no callback from native code into JS: the native
 * side opens its transports and returns this rank's address bytes, `exchange` trades them with
 * every other rank (a rank script does it through the coordinator's store, see
 * storeExchange.ts), and the native side connects. Groups (hpZ blocks, the cross-node group)
 * derive from a connected world without another exchange.
 *
 * Collectives take typed arrays and return promises; the work runs on libuv's pool, so the event
 * loop (heartbeats, logs) stays free. Calls on one communicator run one at a time, in call order;
 * like MPI, every member must call the same collectives in the same order with the same sizes.
 * Arrays must not be detached or resized while a call is in flight.
 *
 * Errors are MixzErrors with a stable code: MIXZ_ERR_INVALID_ARGUMENT for a wrong call (checked
 * here first; the communicator stays usable), MIXZ_ERR_IO for a transport failure, which names
 * the peer ("rank 3 (host node-b): connection closed", "timed out after 30 s waiting for rank 2
 * (host node-a)") and breaks the communicator: every later call fails; build a new world.
 */
import {MixzError} from "@mixz/protocol";

import type {
    NativeCallDescriptor,
    NativeCommBuffer,
    NativeCommMember,
    NativeCommTransport,
    NativeCommunicator,
    NativeCommunicatorOptions,
    NativeQuantizedAllGatherDescriptor,
    NativeReduceOp
} from "../binding/AddonCommunicatorTypes.js";
import {NativeErrorCodes} from "../binding/AddonTypes.js";
import type {NativeFloatDType} from "../binding/AddonTypes.js";
import {loadBinding} from "../binding/loadBinding.js";
import {callNative, callSite} from "../binding/callNative.js";

/** auto: shared memory within a host, Gloo TCP between hosts. shm / gloo: that transport only. */
export type CommTransport = NativeCommTransport;
/** Element types of reductions; fp16 and bf16 travel as bit patterns in a Uint16Array. */
export type CommDType = NativeFloatDType;
export type ReduceOp = NativeReduceOp;
/** Any typed array; all-gather and broadcast move its bytes. */
export type CommBuffer = NativeCommBuffer;
/** A member of a communicator: its global rank, host and process id. */
export type CommMember = NativeCommMember;
/** world, or the group kind it was made as. */
export type CommKind = "world" | "hpz" | "cross";

/** Trades this rank's address for everyone's: resolves with one address per rank, in rank order. */
export type AddressExchange = (myAddress: Uint8Array) => Promise<readonly Uint8Array[]>;

export interface CommunicatorOptions {
    /** This rank, in [0, worldSize). */
    readonly rank: number;
    readonly worldSize: number;
    /** The plan's name of this rank's host: ranks with the same name share memory. */
    readonly host: string;
    /** Names this job's shared-memory segments (/dev/shm/mixz-<jobId>-…). */
    readonly jobId: string;
    /** The ranks on this host in local-rank order, including `rank`. */
    readonly localRanks: readonly number[];
    /** Bounds connecting and is each collective's default timeout; an integer in [1, 2^31 - 1]. */
    readonly timeoutMs: number;
    /** Default "auto". */
    readonly transport?: CommTransport;
    /** Where this rank's Gloo connections listen: a name or address of this machine. Default: `host`. */
    readonly bindAddress?: string;
}

/** Every collective takes these. */
export interface CollectiveOptions {
    /** Names the call in errors; members of one collective pass the same. An integer in [0, 2^32 - 1]; default 0. */
    readonly tag?: number;
    /** Default: the communicator's timeoutMs. */
    readonly timeoutMs?: number;
}

export interface ReduceOptions extends CollectiveOptions {
    /** Default "sum". reduceScatter takes sum and mean; allReduce also max. */
    readonly op?: ReduceOp;
    /** Float32Array: fp32 (the default). Uint16Array: fp16 or bf16, which must be given. */
    readonly dtype?: CommDType;
}

export interface BroadcastOptions extends CollectiveOptions {
    /** The member whose buffer everyone receives. */
    readonly root: number;
}

/** The longest timeout, as for setTimeout: 2^31 - 1 ms. */
export const maxCommTimeoutMs = 2_147_483_647;
/** The largest tag. */
export const maxCommTag = 4_294_967_295;

const typedArrayKinds = [
    Int8Array,
    Uint8Array,
    Uint8ClampedArray,
    Int16Array,
    Uint16Array,
    Int32Array,
    Uint32Array,
    Float32Array,
    Float64Array,
    BigInt64Array,
    BigUint64Array
];

/** The native object behind each Communicator, for other native objects of this package (the engine). */
const natives = new WeakMap<Communicator, NativeCommunicator>();

/** @internal The native communicator of `comm`, which must be open. */
export function nativeCommunicatorOf(comm: Communicator): NativeCommunicator {
    const native = natives.get(comm);
    if (native === undefined) throw new TypeError("not a Communicator of @mixz/engine");
    return native;
}

export class Communicator implements AsyncDisposable {
    readonly #native: NativeCommunicator;
    readonly #timeoutMs: number;
    #tail: Promise<unknown> = Promise.resolve();
    #disposed = false;
    /** This rank's index among the members. */
    readonly rank: number;
    /** The member count. */
    readonly size: number;
    readonly kind: CommKind;
    /** How collectives travel: "local" (one member), "shm", "gloo" or "shm+gloo" (hierarchical). */
    readonly transport: string;
    /** The members in order. */
    readonly members: readonly CommMember[];

    private constructor(native: NativeCommunicator, timeoutMs: number) {
        this.#native = native;
        this.#timeoutMs = timeoutMs;
        natives.set(this, native);
        const info = native.info();
        this.rank = info.rank;
        this.size = info.size;
        this.kind = info.kind;
        this.transport = info.transport;
        this.members = info.members;
    }

    /**
     * Builds the world communicator of this rank: prepares the transports, trades addresses
     * through `exchange`, connects. Every rank of the world calls it. Rejects with
     * MIXZ_ERR_INVALID_ARGUMENT for inconsistent options (here or between ranks) and MIXZ_ERR_IO
     * naming a rank that did not connect within timeoutMs.
     */
    static async create(options: CommunicatorOptions, exchange: AddressExchange): Promise<Communicator> {
        const fn = "Communicator.create";
        const site = callSite();
        const descriptor = checkCreateOptions(fn, options);
        if (typeof exchange !== "function") throw invalid(fn, `exchange must be a function, got ${describe(exchange)}`);
        const native = await callNative(site, () => Promise.resolve(new (loadBinding().Communicator)(descriptor)));
        try {
            const mine = await callNative(site, () => native.prepare());
            const all: unknown = await exchange(mine);
            if (!Array.isArray(all) || all.length !== descriptor.worldSize || !all.every((a) => a instanceof Uint8Array)) {
                throw invalid(fn, `exchange must resolve with ${descriptor.worldSize} Uint8Array addresses in rank order, ` +
                    `got ${Array.isArray(all) ? `an array of ${all.length}` : describe(all)}`);
            }
            await callNative(site, () => native.connect(all as Uint8Array[]));
        } catch (error) {
            native.close();
            throw error;
        }
        return new Communicator(native, descriptor.timeoutMs);
    }

    /**
     * A sub-communicator of this world; every world rank calls it with the same arguments, in the
     * same order as its other groups. "hpz": consecutive blocks of h ranks (h divides the world
     * size and every host's rank count). "cross": the ranks with this rank's local rank, one per
     * node.
     */
    group(kind: "hpz", h: number, options?: CollectiveOptions): Promise<Communicator>;
    group(kind: "cross", options?: CollectiveOptions): Promise<Communicator>;
    group(kind: "hpz" | "cross", hOrOptions?: number | CollectiveOptions, maybeOptions?: CollectiveOptions): Promise<Communicator> {
        const fn = "Communicator.group";
        const site = callSite();
        this.#checkLive(fn);
        if (this.kind !== "world") throw invalid(fn, `groups are made from the world communicator, this one is ${this.kind}`);
        let h = 0;
        let options: CollectiveOptions | undefined;
        if (kind === "hpz") {
            h = checkInteger(fn, "h", hOrOptions, 1, this.size);
            if (this.size % h !== 0) throw invalid(fn, `hpZ group size ${h} does not divide the world size ${this.size}`);
            options = maybeOptions;
        } else if (kind === "cross") {
            if (typeof hOrOptions === "number") throw invalid(fn, "the cross group takes no size");
            options = hOrOptions;
        } else {
            throw invalid(fn, `kind must be "hpz" or "cross", got ${describe(kind)}`);
        }
        const descriptor = {kind, h, ...this.#callDescriptor(fn, options)};
        return this.#enqueue(site, async () => new Communicator(await this.#native.group(descriptor), this.#timeoutMs));
    }

    /**
     * All-gather: every member contributes `input`; `output` (size × input.length elements of the
     * same array kind) receives member m's at m × input.length. In place: `input` may be this
     * member's part of `output` (a subarray of it at rank × input.length).
     */
    allGather(input: CommBuffer, output: CommBuffer, options?: CollectiveOptions): Promise<void> {
        const fn = "Communicator.allGather";
        const site = callSite();
        this.#checkLive(fn);
        checkBuffer(fn, "input", input);
        checkBuffer(fn, "output", output);
        checkSameKind(fn, input, output);
        if (output.length !== input.length * this.size) {
            throw invalid(fn, `output must have size × input.length = ${this.size} × ${input.length} = ` +
                `${this.size * input.length} elements, got ${output.length}`);
        }
        const descriptor = {input, output, ...this.#callDescriptor(fn, options)};
        return this.#enqueue(site, () => this.#native.allGather(descriptor));
    }

    /**
     * All-gather with varying sizes: member m contributes counts[m] elements (this member's input
     * is counts[rank] long); `output` (their sum) receives them in member order.
     */
    allGatherV(input: CommBuffer, output: CommBuffer, counts: readonly number[], options?: CollectiveOptions): Promise<void> {
        const fn = "Communicator.allGatherV";
        const site = callSite();
        this.#checkLive(fn);
        checkBuffer(fn, "input", input);
        checkBuffer(fn, "output", output);
        checkSameKind(fn, input, output);
        if (!Array.isArray(counts) || counts.length !== this.size) {
            throw invalid(fn, `counts must be an array of ${this.size} element counts, one per member, got ${describe(counts)}`);
        }
        let total = 0;
        counts.forEach((count, m) => {
            total += checkInteger(fn, `counts[${m}]`, count, 0, Number.MAX_SAFE_INTEGER);
        });
        if (counts[this.rank] !== input.length) {
            throw invalid(fn, `input has ${input.length} elements, counts[${this.rank}] says ${counts[this.rank]}`);
        }
        if (output.length !== total) throw invalid(fn, `output must have the sum of counts, ${total} elements, got ${output.length}`);
        const bytes = counts.map((count) => count * input.BYTES_PER_ELEMENT);
        const descriptor = {input, output, bytes, ...this.#callDescriptor(fn, options)};
        return this.#enqueue(site, () => this.#native.allGatherV(descriptor));
    }

    /**
     * @internal The native call of quantizedAllGather (quantizedAllGather.ts), which validated the
     * descriptor: queued behind this communicator's other calls like every collective. Resolves
     * with the bytes each member sent.
     */
    _quantizedAllGather(descriptor: Omit<NativeQuantizedAllGatherDescriptor, "tag" | "timeoutMs">, options?: CollectiveOptions): Promise<number> {
        const fn = "quantizedAllGather";
        const site = callSite();
        this.#checkLive(fn);
        const complete = {...descriptor, ...this.#callDescriptor(fn, options)};
        return this.#enqueue(site, () => this.#native.quantizedAllGather(complete));
    }

    /**
     * Reduce-scatter: `input` holds size × output.length elements; `output` receives the sum (or
     * mean) over members of their chunk `rank`. In place: `output` may be this member's chunk of
     * `input`.
     */
    reduceScatter(input: Float32Array | Uint16Array, output: Float32Array | Uint16Array, options?: ReduceOptions): Promise<void> {
        const fn = "Communicator.reduceScatter";
        const site = callSite();
        this.#checkLive(fn);
        const {dtype, op} = checkReduce(fn, input, output, options, ["sum", "mean"]);
        if (input.length !== output.length * this.size) {
            throw invalid(fn, `input must have size × output.length = ${this.size} × ${output.length} = ` +
                `${this.size * output.length} elements, got ${input.length}`);
        }
        const descriptor = {input, output, count: output.length, dtype, op, ...this.#callDescriptor(fn, options)};
        return this.#enqueue(site, () => this.#native.reduceScatter(descriptor));
    }

    /**
     * All-reduce: `output` receives the element-wise sum, mean or max over members of `input`;
     * every member gets the same bits. Pass the same array twice to reduce in place.
     */
    allReduce(input: Float32Array | Uint16Array, output: Float32Array | Uint16Array, options?: ReduceOptions): Promise<void> {
        const fn = "Communicator.allReduce";
        const site = callSite();
        this.#checkLive(fn);
        const {dtype, op} = checkReduce(fn, input, output, options, ["sum", "mean", "max"]);
        if (input.length !== output.length) {
            throw invalid(fn, `input and output must have the same length, got ${input.length} and ${output.length}`);
        }
        const descriptor = {input, output, count: output.length, dtype, op, ...this.#callDescriptor(fn, options)};
        return this.#enqueue(site, () => this.#native.allReduce(descriptor));
    }

    /** Broadcast: every member's `buffer` receives member `root`'s. */
    broadcast(buffer: CommBuffer, options: BroadcastOptions): Promise<void> {
        const fn = "Communicator.broadcast";
        const site = callSite();
        this.#checkLive(fn);
        checkBuffer(fn, "buffer", buffer);
        if (typeof options !== "object" || options === null) throw invalid(fn, `options must be an object with root, got ${describe(options)}`);
        const root = checkInteger(fn, "root", options.root, 0, this.size - 1);
        const descriptor = {buffer, root, ...this.#callDescriptor(fn, options)};
        return this.#enqueue(site, () => this.#native.broadcast(descriptor));
    }

    /** Resolves once every member has called it. */
    barrier(options?: CollectiveOptions): Promise<void> {
        const fn = "Communicator.barrier";
        const site = callSite();
        this.#checkLive(fn);
        const descriptor = this.#callDescriptor(fn, options);
        return this.#enqueue(site, () => this.#native.barrier(descriptor));
    }

    /**
     * Fails this communicator now, even while a call is in flight: shared-memory peers blocked on
     * this rank fail at once with `reason` instead of timing out, this rank's own shared-memory
     * collective in flight rejects (a Gloo wait ends at its timeout), and every later call fails.
     * For a rank that is about to give up; dispose() still releases the resources.
     */
    abort(reason: string): void {
        if (this.#disposed) return;
        this.#native.abort(typeof reason === "string" ? reason : String(reason));
    }

    /**
     * Waits for the calls in flight, then releases the transports: peers that still wait for this
     * rank see it gone. Idempotent. Calls made afterwards throw MIXZ_ERR_INVALID_ARGUMENT.
     */
    async dispose(): Promise<void> {
        if (this.#disposed) return;
        this.#disposed = true;
        await this.#tail.catch(() => undefined);
        this.#native.close();
    }

    async [Symbol.asyncDispose](): Promise<void> {
        await this.dispose();
    }

    /** Whether dispose() was called. */
    get disposed(): boolean {
        return this.#disposed;
    }

    #checkLive(fn: string): void {
        if (this.#disposed) throw invalid(fn, "the communicator is disposed");
    }

    #callDescriptor(fn: string, options: CollectiveOptions | undefined): NativeCallDescriptor {
        if (options !== undefined && (typeof options !== "object" || options === null)) {
            throw invalid(fn, `options must be an object, got ${describe(options)}`);
        }
        const tag = options?.tag === undefined ? 0 : checkInteger(fn, "tag", options.tag, 0, maxCommTag);
        const timeoutMs = options?.timeoutMs === undefined
            ? this.#timeoutMs
            : checkInteger(fn, "timeoutMs", options.timeoutMs, 1, maxCommTimeoutMs);
        return {tag, timeoutMs};
    }

    /** Runs `work` after every earlier call of this communicator has settled. */
    #enqueue<T>(site: Error, work: () => Promise<T>): Promise<T> {
        const result = this.#tail.then(() => callNative(site, work));
        this.#tail = result.catch(() => undefined);
        return result;
    }
}

function invalid(fn: string, message: string, context: Readonly<Record<string, unknown>> = {}): MixzError {
    return new MixzError(NativeErrorCodes.invalidArgument, `${fn}: ${message}`, {category: "worker", context});
}

function describe(value: unknown): string {
    if (typeof value === "number" || typeof value === "bigint" || typeof value === "boolean") return String(value);
    if (typeof value === "string") return JSON.stringify(value);
    if (value === null) return "null";
    if (Array.isArray(value)) return "an array";
    if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}`;
    return typeof value;
}

function checkInteger(fn: string, what: string, value: unknown, min: number, max: number): number {
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
        throw invalid(fn, `${what} must be an integer in [${min}, ${max}], got ${describe(value)}`, {option: what, value});
    }
    return value;
}

function checkString(fn: string, what: string, value: unknown): string {
    if (typeof value !== "string" || value === "") throw invalid(fn, `${what} must be a non-empty string, got ${describe(value)}`);
    return value;
}

function checkBuffer(fn: string, what: string, value: unknown): asserts value is CommBuffer {
    if (!typedArrayKinds.some((kind) => value instanceof kind)) {
        throw invalid(fn, `${what} must be a typed array, got ${describe(value)}`);
    }
}

function checkSameKind(fn: string, input: CommBuffer, output: CommBuffer): void {
    if (input.constructor !== output.constructor) {
        throw invalid(fn, `input and output must be typed arrays of the same kind, got a ${input.constructor.name} and a ${output.constructor.name}`);
    }
}

function checkReduce(
    fn: string,
    input: unknown,
    output: unknown,
    options: ReduceOptions | undefined,
    ops: readonly ReduceOp[]
): {dtype: CommDType; op: ReduceOp} {
    const isFloatArray = (value: unknown): value is Float32Array | Uint16Array =>
        value instanceof Float32Array || value instanceof Uint16Array;
    if (!isFloatArray(input)) throw invalid(fn, `input must be a Float32Array (fp32) or Uint16Array (fp16, bf16), got ${describe(input)}`);
    if (!isFloatArray(output)) throw invalid(fn, `output must be a Float32Array (fp32) or Uint16Array (fp16, bf16), got ${describe(output)}`);
    checkSameKind(fn, input, output);
    if (options !== undefined && (typeof options !== "object" || options === null)) {
        throw invalid(fn, `options must be an object, got ${describe(options)}`);
    }
    const op = options?.op ?? "sum";
    if (!ops.includes(op)) throw invalid(fn, `op must be ${ops.join(" or ")}, got ${describe(op)}`);
    let dtype: CommDType;
    if (input instanceof Float32Array) {
        dtype = options?.dtype ?? "fp32";
        if (dtype !== "fp32") throw invalid(fn, `a Float32Array holds fp32, but dtype is ${describe(dtype)}`);
    } else {
        const given = options?.dtype;
        if (given !== "fp16" && given !== "bf16") {
            throw invalid(fn, `a Uint16Array holds fp16 or bf16 bit patterns: dtype must say which, got ${describe(given)}`);
        }
        dtype = given;
    }
    return {dtype, op};
}

function checkCreateOptions(fn: string, options: CommunicatorOptions): NativeCommunicatorOptions {
    if (typeof options !== "object" || options === null) throw invalid(fn, `options must be an object, got ${describe(options)}`);
    const worldSize = checkInteger(fn, "worldSize", options.worldSize, 1, 1 << 20);
    const rank = checkInteger(fn, "rank", options.rank, 0, worldSize - 1);
    const host = checkString(fn, "host", options.host);
    const jobId = checkString(fn, "jobId", options.jobId);
    const timeoutMs = checkInteger(fn, "timeoutMs", options.timeoutMs, 1, maxCommTimeoutMs);
    const transport = options.transport ?? "auto";
    if (transport !== "auto" && transport !== "shm" && transport !== "gloo") {
        throw invalid(fn, `transport must be "auto", "shm" or "gloo", got ${describe(transport)}`);
    }
    const bindAddress = options.bindAddress === undefined ? host : checkString(fn, "bindAddress", options.bindAddress);
    const localRanks = options.localRanks;
    if (!Array.isArray(localRanks) || localRanks.length === 0) {
        throw invalid(fn, `localRanks must be a non-empty array of ranks, got ${describe(localRanks)}`);
    }
    localRanks.forEach((r, i) => {
        checkInteger(fn, `localRanks[${i}]`, r, 0, worldSize - 1);
        if (i > 0 && r <= localRanks[i - 1]!) throw invalid(fn, "localRanks must be in increasing order without repeats");
    });
    if (!localRanks.includes(rank)) throw invalid(fn, `localRanks must include this rank ${rank}`);
    if (transport === "shm" && localRanks.length !== worldSize) {
        throw invalid(fn, `transport "shm" needs every rank on one host, but localRanks has ${localRanks.length} of ${worldSize}`);
    }
    return {rank, worldSize, host, jobId, localRanks: [...localRanks], timeoutMs, transport, bindAddress};
}

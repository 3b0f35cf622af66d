/**
 * The hand-written type of everything the native addon (`native/build/<type>/mixz.node`) exports.
 *
 * The addon is plain C++ (native/addon/addon.cc); nothing checks these types against it at compile
 * time. They are kept honest by `loadBinding`, which verifies that every export listed in
 * `bindingExportTypes` has its type, and by the engine's tests, which call each one.
 *
 * Only @mixz/engine imports the binding; other packages use the engine's typed functions.
 */

import type {
    NativeCommBenchmarkDescriptor,
    NativeCommFaultDescriptor,
    NativeCommFaultReport,
    NativeCommSelfTestDescriptor,
    NativeCommSelfTestReport,
    NativeCommunicatorConstructor
} from "./AddonCommunicatorTypes.js";
import type {NativeCudaProbe} from "./AddonCudaTypes.js";
import type {NativeCreateEngine} from "./AddonEngineTypes.js";

/** What `version()` reports about Gloo, the transport between hosts. */
export interface NativeGlooInfo {
    /** Gloo's version from the headers the addon was compiled against, e.g. "0.5.0". */
    readonly version: string;
    /** Transports compiled into libgloo: "tcp", "tcp_tls", "ibverbs", "uv". */
    readonly transports: readonly string[];
    /**
     * Description of a TCP device the probe created on 127.0.0.1, e.g.
     * "tcp, pci=, iface=lo, speed=-1, addr=[127.0.0.1]"; null when creating it failed.
     */
    readonly tcpDevice: string | null;
    /** Why creating the TCP device failed; null when it succeeded. */
    readonly tcpDeviceError: string | null;
}

/** How OpenBLAS runs its own threads (openblas_get_parallel). */
export type NativeBlasParallelism = "sequential" | "pthreads" | "openmp" | "unknown";

/** What `version()` reports about the BLAS library that serves GEMM. */
export interface NativeBlasInfo {
    /** First word of `config`: "OpenBLAS". */
    readonly name: string;
    /** openblas_get_config(): version and build options. */
    readonly config: string;
    /** The kernel set OpenBLAS chose for this CPU, e.g. "Haswell". */
    readonly corename: string;
    /** OpenBLAS's thread count. */
    readonly threads: number;
    readonly parallel: NativeBlasParallelism;
    /**
     * Canonical path of the shared library that actually defines cblas_sgemm in this process.
     * Debian's alternatives can swap libblas, so this, not the link line, says what runs. Empty
     * when the dynamic linker cannot tell.
     */
    readonly library: string;
    /** Whether a small sgemm with a known exact result was correct. */
    readonly sgemmOk: boolean;
}

/** Run-time CPU features; the binary targets baseline x86-64 and dispatches on these. */
export interface NativeCpuInfo {
    readonly avx2: boolean;
    readonly fma: boolean;
}

/** The result of the addon's `version()`: what the binary is built from and whether its libraries work. */
export interface NativeBuildInfo {
    /** The native engine's version; equals the mixz package version. */
    readonly version: string;
    /** Compiler and version, e.g. "gcc 12.2.0". */
    readonly compiler: string;
    readonly buildType: "Release" | "Debug";
    /** Sanitizers compiled in ("address", "undefined"); empty for normal builds. */
    readonly sanitizers: readonly string[];
    readonly gloo: NativeGlooInfo;
    readonly blas: NativeBlasInfo;
    readonly cpu: NativeCpuInfo;
}

/**
 * What `new Watchdog(options)` takes: a complete descriptor, validated by startWatchdog first
 * (the addon checks again and throws MIXZ_ERR_INVALID_ARGUMENT).
 */
export interface NativeWatchdogOptions {
    /** Descriptor whose end of file (or hang-up) kills the process; -1 for none. Must be open. */
    readonly fd: number;
    /** Lease in milliseconds, an integer in [0, 2^31 - 1]; 0 arms none. */
    readonly leaseMs: number;
    /** Names the process in the watchdog's stderr line ("rank 3"): 1 to 256 bytes, no control characters. */
    readonly label: string;
}

/** A running native watchdog thread (native/include/mixz/runtime/watchdog.h). */
export interface NativeWatchdog {
    /** Deadline = now + leaseMs (steady clock); 0 removes the lease. Does nothing once stopped. */
    renew(leaseMs: number): void;
    /** Stops and joins the thread; idempotent. A collected instance is stopped by its finalizer. */
    stop(): void;
}

export interface NativeWatchdogConstructor {
    /** Starts the thread. Throws MIXZ_ERR_INVALID_ARGUMENT for bad options or a closed fd. */
    new (options: NativeWatchdogOptions): NativeWatchdog;
}

/** The result of the addon's `processGroup()`. */
export interface NativeProcessGroup {
    /** getpgrp(): this process's process group id. */
    readonly pgid: number;
    /** Whether this process leads that group (pgid === pid): the watchdog then kills the whole group. */
    readonly leader: boolean;
}

/** A floating-point element type; fp16 and bf16 travel as their bit patterns in a Uint16Array. */
export type NativeFloatDType = "fp32" | "fp16" | "bf16";

/** Bits per quantized value: int8, or int4 packed two per byte (element 2i in the high nibble). */
export type NativeQuantBits = 8 | 4;

/** Which kernels run: "auto" resolves (on the JS thread) to "avx2" when the CPU has it, unless MIXZ_SIMD=scalar. */
export type NativeSimd = "auto" | "scalar" | "avx2";

/**
 * `quantize(input, q, scales, descriptor)`. Complete: every field is required. `input` is a
 * Float32Array (fp32) or Uint16Array (fp16, bf16) of exactly `elements`; `q` an Int8Array (bits 8)
 * or Uint8Array (bits 4) of exactly quantizedBytes(paddedElements, bits); `scales` a Float32Array
 * of exactly ceil(paddedElements / blockSize).
 */
export interface NativeQuantizeDescriptor {
    readonly dtype: NativeFloatDType;
    readonly bits: NativeQuantBits;
    /** A power of two in [8, 65536]. */
    readonly blockSize: number;
    readonly elements: number;
    /** ≥ elements; the codes past `elements` are zero padding. */
    readonly paddedElements: number;
    readonly simd: NativeSimd;
    /** 0 for the default (min(hardware, MIXZ_QUANT_THREADS)), else at most NativeQuantInfo.maxThreads. */
    readonly threads: number;
}

/**
 * `dequantize(q, scales, out, descriptor)`: `q` of exactly quantizedBytes(elements, bits), `scales`
 * of exactly ceil(elements / blockSize), `out` (Float32Array or Uint16Array by outDtype) of exactly `elements`.
 */
export interface NativeDequantizeDescriptor {
    readonly bits: NativeQuantBits;
    readonly blockSize: number;
    readonly elements: number;
    readonly outDtype: NativeFloatDType;
    readonly simd: NativeSimd;
    readonly threads: number;
}

/** One parameter's slice of a coalesced quantized buffer (offsets in elements, scales by index). */
export interface NativeDequantizeSegment {
    readonly elements: number;
    readonly blockSize: number;
    /** Even for int4. */
    readonly inputOffset: number;
    readonly scaleOffset: number;
    readonly outputOffset: number;
}

/** `dequantizeSegments(q, scales, out, descriptor)`: every range inside its buffer, output ranges disjoint. */
export interface NativeDequantizeSegmentsDescriptor {
    readonly bits: NativeQuantBits;
    readonly outDtype: NativeFloatDType;
    readonly segments: readonly NativeDequantizeSegment[];
    readonly simd: NativeSimd;
    readonly threads: number;
}

/** `convertFloats(input, output, descriptor)`: arrays of the dtypes' kinds and of equal length. */
export interface NativeConvertFloatsDescriptor {
    readonly from: NativeFloatDType;
    readonly to: NativeFloatDType;
    readonly simd: NativeSimd;
    readonly threads: number;
}

/** `quantBenchmark(descriptor)`. */
export interface NativeQuantBenchmarkDescriptor {
    /** In [1, 2^32]. */
    readonly elements: number;
    readonly dtype: NativeFloatDType;
    readonly bits: NativeQuantBits;
    readonly blockSize: number;
    /** Timed repetitions in [1, 10000], after one warm-up; medians are reported. */
    readonly iterations: number;
    readonly threads: number;
    readonly simd: NativeSimd;
}

/** What `quantBenchmark` measured (GB = 10^9 bytes). */
export interface NativeQuantBenchmarkResult {
    /** elements × the dtype's size: what quantize consumes. */
    readonly inputBytes: number;
    /** Codes plus float32 scales: what dequantize consumes. */
    readonly quantizedBytes: number;
    readonly quantizeSeconds: number;
    readonly dequantizeSeconds: number;
    readonly memcpySeconds: number;
    /** inputBytes / quantizeSeconds. */
    readonly quantizeGBps: number;
    /** quantizedBytes / dequantizeSeconds. */
    readonly dequantizeGBps: number;
    /** inputBytes / dequantizeSeconds: the tensor bytes dequantize writes (output dtype = input dtype). */
    readonly dequantizeOutputGBps: number;
    /** inputBytes / memcpySeconds, one thread. */
    readonly memcpyGBps: number;
    readonly simd: "scalar" | "avx2";
    readonly threads: number;
}

/** `quantInfo()`. */
export interface NativeQuantInfo {
    /** Whether the AVX2 (+FMA, F16C) kernels can run on this CPU. */
    readonly avx2: boolean;
    /** What "auto" picks when MIXZ_SIMD is unset. */
    readonly defaultSimd: "scalar" | "avx2";
    /** Threads a call with threads = 0 uses for large buffers. */
    readonly defaultThreads: number;
    /** The most threads a call may ask for. */
    readonly maxThreads: number;
}

/** Everything the `.node` file exports. */
export interface BindingModule {
    /** Probes the build and its libraries (creates one loopback Gloo device, runs one tiny sgemm). */
    version(): NativeBuildInfo;
    /**
     * The lifeline watchdog: a native thread that SIGKILLs this process (its process group when it
     * leads one) on end of file of `fd` or when the lease runs out, even while JS is blocked.
     */
    readonly Watchdog: NativeWatchdogConstructor;
    /** This process's process group and whether it leads it. */
    processGroup(): NativeProcessGroup;
    /**
     * Block-quantizes `input` into `q` and `scales` on a worker thread. Throws
     * MIXZ_ERR_INVALID_ARGUMENT synchronously for a bad descriptor or arrays; rejects with it for
     * non-finite input values.
     */
    quantize(
        input: Float32Array | Uint16Array,
        q: Int8Array | Uint8Array,
        scales: Float32Array,
        descriptor: NativeQuantizeDescriptor
    ): Promise<void>;
    /** Dequantizes `q` with one block size into `out` on a worker thread. */
    dequantize(
        q: Int8Array | Uint8Array,
        scales: Float32Array,
        out: Float32Array | Uint16Array,
        descriptor: NativeDequantizeDescriptor
    ): Promise<void>;
    /** Dequantizes each segment of a coalesced buffer with its own block size and scales. */
    dequantizeSegments(
        q: Int8Array | Uint8Array,
        scales: Float32Array,
        out: Float32Array | Uint16Array,
        descriptor: NativeDequantizeSegmentsDescriptor
    ): Promise<void>;
    /** Converts between fp32, fp16 and bf16 (round to nearest even) on a worker thread. */
    convertFloats(
        input: Float32Array | Uint16Array,
        output: Float32Array | Uint16Array,
        descriptor: NativeConvertFloatsDescriptor
    ): Promise<void>;
    /** Times quantize, dequantize and a single-threaded memcpy in native code. */
    quantBenchmark(descriptor: NativeQuantBenchmarkDescriptor): Promise<NativeQuantBenchmarkResult>;
    /** The quantization kernels and threads available. */
    quantInfo(): NativeQuantInfo;
    /** A collective communicator (prepare, exchange, connect); see AddonCommunicatorTypes.ts. */
    readonly Communicator: NativeCommunicatorConstructor;
    /** Test support: the collective suite on N ranks as threads of this process. */
    commSelfTest(descriptor: NativeCommSelfTestDescriptor): Promise<NativeCommSelfTestReport>;
    /** Test support: one misbehaving rank among N threads; what each rank's all-gather reported. */
    commFaultTest(descriptor: NativeCommFaultDescriptor): Promise<NativeCommFaultReport>;
    /** Test support: seconds per all-gather on N threads (the slowest rank's mean). */
    commBenchmark(descriptor: NativeCommBenchmarkDescriptor): Promise<number>;
    /** The ZeRO-3 engine on a connected world communicator (gathers the persistent parameters). */
    readonly createEngine: NativeCreateEngine;
    /** What this machine has for the CUDA backend and whether this build has it; never throws for what is missing. */
    cudaProbe(): NativeCudaProbe;
}

/**
 * The JS type each export must have. A Record over `keyof BindingModule`, so adding an export to
 * BindingModule without listing it here fails to compile, and `loadBinding` checks all of them.
 */
export const bindingExportTypes: Readonly<Record<keyof BindingModule, "function">> = {
    version: "function",
    Watchdog: "function",
    processGroup: "function",
    quantize: "function",
    dequantize: "function",
    dequantizeSegments: "function",
    convertFloats: "function",
    quantBenchmark: "function",
    quantInfo: "function",
    Communicator: "function",
    commSelfTest: "function",
    commFaultTest: "function",
    commBenchmark: "function",
    createEngine: "function",
    cudaProbe: "function"
};

/**
 * The `code` of errors thrown by native functions (native/include/mixz/common/error.h). Together
 * with the codes in @mixz/protocol's ErrorCodes they form the set tools match on.
 */
export const NativeErrorCodes = {
    /** A transport or file operation failed; rebuild the communicator before retrying. */
    io: "MIXZ_ERR_IO",
    /** Bad input reached native code (a gap in the TS validation). */
    invalidArgument: "MIXZ_ERR_INVALID_ARGUMENT",
    /** A broken invariant inside the native engine: a bug. */
    internal: "MIXZ_ERR_INTERNAL"
} as const;

export type NativeErrorCode = (typeof NativeErrorCodes)[keyof typeof NativeErrorCodes];

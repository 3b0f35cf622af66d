import {existsSync, readFileSync} from "node:fs";
import {availableParallelism} from "node:os";
import type {RankDescriptor} from "@mixz/protocol";

/** What the environment of a rank looks like on this host. */
export interface HostFacts {
    readonly cpus: number;
    /** Whether NVIDIA GPUs are present (then CUDA_VISIBLE_DEVICES selects this node's slots). */
    readonly hasNvidiaGpus: boolean;
    /** The CPU's feature flags (/proc/cpuinfo), for choosing OpenBLAS kernels. */
    readonly cpuFlags: ReadonlySet<string>;
}

export function hostFacts(): HostFacts {
    return {cpus: availableParallelism(), hasNvidiaGpus: existsSync("/dev/nvidiactl") || existsSync("/proc/driver/nvidia/gpus"), cpuFlags: cpuFlags()};
}

function cpuFlags(): ReadonlySet<string> {
    try {
        const line = readFileSync("/proc/cpuinfo", "utf8").split("\n").find((l) => l.startsWith("flags"));
        return new Set(line?.slice(line.indexOf(":") + 1).trim().split(/\s+/) ?? []);
    } catch {
        return new Set();
    }
}

/**
 * The OpenBLAS kernel family for these CPU flags. OpenBLAS picks its kernels by CPU model at load
 * time and falls back to its oldest SSE kernels ("Prescott") for models it does not know: Debian's
 * 0.3.21 does that on current Xeons, which made the engine's GEMMs 3.5× slower than with the
 * SkylakeX kernels on the same CPU (measured, issue 5). Choosing by feature flags instead is safe:
 * each family needs exactly these instructions.
 */
export function openblasCoreType(flags: ReadonlySet<string>): string | undefined {
    if (["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"].every((f) => flags.has(f))) return "SkylakeX";
    if (["avx2", "fma"].every((f) => flags.has(f))) return "Haswell";
    return undefined;
}

/**
 * The variables a rank runs with, on top of what it inherited: the torchrun/DeepSpeed rank
 * variables, the launcher's forwarded variables and env files, and thread counts. Ranks on one
 * host share its cores, so each rank gets `cpus / ranks on this host` threads (OMP_NUM_THREADS, which
 * the engine's kernels use; torchrun sets OMP_NUM_THREADS=1 for the same reason: oversubscribed
 * spinning threads make every rank slower). OpenBLAS itself runs single-threaded
 * (OPENBLAS_NUM_THREADS=1): the engine splits each GEMM over its own kernel threads, which measured
 * faster than OpenBLAS's threads and never leaves them spinning between calls. OPENBLAS_CORETYPE is
 * chosen from the CPU flags (see openblasCoreType). Whatever the user set is kept.
 */
export function rankEnvironment(descriptor: RankDescriptor, inherited: NodeJS.ProcessEnv, facts: HostFacts): Record<string, string> {
    const env: Record<string, string> = {...descriptor.env};
    const threads = String(Math.max(1, Math.floor(facts.cpus / descriptor.localWorldSize)));
    const defaults: Record<string, string | undefined> = {
        OMP_NUM_THREADS: threads,
        OPENBLAS_NUM_THREADS: "1",
        OPENBLAS_CORETYPE: openblasCoreType(facts.cpuFlags)
    };
    for (const [name, value] of Object.entries(defaults)) {
        if (value !== undefined && inherited[name] === undefined && env[name] === undefined) env[name] = value;
    }
    Object.assign(env, {
        RANK: String(descriptor.rank),
        LOCAL_RANK: String(descriptor.localRank),
        WORLD_SIZE: String(descriptor.worldSize),
        LOCAL_WORLD_SIZE: String(descriptor.localWorldSize),
        LOCAL_SIZE: String(descriptor.localWorldSize),
        CROSS_RANK: String(descriptor.crossRank),
        CROSS_SIZE: String(descriptor.crossSize),
        NODE_RANK: String(descriptor.crossRank),
        MASTER_ADDR: descriptor.masterAddr,
        MASTER_PORT: String(descriptor.masterPort),
        MIXZ_JOB_ID: descriptor.jobId,
        MIXZ_HOST: descriptor.host
    });
    // LOCAL_RANK indexes this list: the node's slots in order (DeepSpeed's launch.py does the same).
    if (facts.hasNvidiaGpus) env["CUDA_VISIBLE_DEVICES"] = descriptor.nodeSlots.join(",");
    return env;
}

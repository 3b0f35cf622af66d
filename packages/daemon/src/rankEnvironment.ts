import {existsSync} from "node:fs";
import {availableParallelism} from "node:os";
import type {RankDescriptor} from "@mixz/protocol";

/** What the environment of a rank looks like on this host. */
export interface HostFacts {
    readonly cpus: number;
    /** Whether NVIDIA GPUs are present (then CUDA_VISIBLE_DEVICES selects this node's slots). */
    readonly hasNvidiaGpus: boolean;
}

export function hostFacts(): HostFacts {
    return {cpus: availableParallelism(), hasNvidiaGpus: existsSync("/dev/nvidiactl") || existsSync("/proc/driver/nvidia/gpus")};
}

/**
 * The variables a rank runs with, on top of what it inherited: the torchrun/DeepSpeed rank
 * variables, the launcher's forwarded variables and env files, and thread counts. Ranks on one
 * host share its cores, so BLAS and OpenMP get `cpus / ranks on this host` threads each unless the
 * user set them (torchrun sets OMP_NUM_THREADS=1 for the same reason; oversubscribed spinning
 * threads make every rank slower).
 */
export function rankEnvironment(descriptor: RankDescriptor, inherited: NodeJS.ProcessEnv, facts: HostFacts): Record<string, string> {
    const env: Record<string, string> = {...descriptor.env};
    const threads = String(Math.max(1, Math.floor(facts.cpus / descriptor.localWorldSize)));
    for (const name of ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"]) {
        if (inherited[name] === undefined && env[name] === undefined) env[name] = threads;
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

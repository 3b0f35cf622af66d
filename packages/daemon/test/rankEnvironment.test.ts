import assert from "node:assert/strict";
import {describe, it} from "node:test";
import type {RankDescriptor} from "@mixz/protocol";
import {openblasCoreType, rankEnvironment} from "../src/rankEnvironment.js";

const noFlags: ReadonlySet<string> = new Set();

const descriptor = {
    protocol: 1, mixzVersion: "0.1.0", jobId: "j1", token: "t", coordinatorUrl: "ws://127.0.0.1:1/", rank: 5, localRank: 1, worldSize: 8,
    localWorldSize: 3, crossRank: 2, crossSize: 3, host: "node-c", slot: 6, nodeSlots: [4, 6, 7], masterAddr: "10.0.0.1", masterPort: 29500,
    script: "/t.ts", args: [], cwd: "/", env: {FROM_FILE: "1"}, config: null, joinTimeoutMs: 1000, heartbeatIntervalMs: 100, heartbeatMisses: 3, logFormat: "pretty"
} satisfies RankDescriptor;

describe("rankEnvironment", () => {
    it("the torchrun/DeepSpeed variables, env-file values and per-rank thread counts", () => {
        const env = rankEnvironment(descriptor, {}, {cpus: 8, hasNvidiaGpus: false, cpuFlags: noFlags});
        assert.deepEqual(env, {
            FROM_FILE: "1", OMP_NUM_THREADS: "2", OPENBLAS_NUM_THREADS: "1", RANK: "5", LOCAL_RANK: "1", WORLD_SIZE: "8", LOCAL_WORLD_SIZE: "3",
            LOCAL_SIZE: "3", CROSS_RANK: "2", CROSS_SIZE: "3", NODE_RANK: "2", MASTER_ADDR: "10.0.0.1", MASTER_PORT: "29500", MIXZ_JOB_ID: "j1", MIXZ_HOST: "node-c"
        });
    });
    it("CUDA_VISIBLE_DEVICES lists the node's slots on GPU hosts, so LOCAL_RANK indexes it", () => {
        const env = rankEnvironment(descriptor, {}, {cpus: 2, hasNvidiaGpus: true, cpuFlags: noFlags});
        assert.equal(env["CUDA_VISIBLE_DEVICES"], "4,6,7");
        assert.equal(env["OMP_NUM_THREADS"], "1", "at least one thread");
    });
    it("thread counts the user set are kept", () => {
        const env = rankEnvironment({...descriptor, env: {OPENBLAS_NUM_THREADS: "4"}}, {OMP_NUM_THREADS: "3"}, {cpus: 8, hasNvidiaGpus: false, cpuFlags: noFlags});
        assert.equal(env["OMP_NUM_THREADS"], undefined);
        assert.equal(env["OPENBLAS_NUM_THREADS"], "4");
    });
    it("OpenBLAS kernels follow the CPU flags, unless the user chose", () => {
        const avx512 = new Set(["sse2", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]);
        assert.equal(openblasCoreType(avx512), "SkylakeX");
        assert.equal(openblasCoreType(new Set(["avx2", "fma"])), "Haswell");
        assert.equal(openblasCoreType(new Set(["avx", "avx512f"])), undefined);
        assert.equal(openblasCoreType(noFlags), undefined);
        assert.equal(rankEnvironment(descriptor, {}, {cpus: 8, hasNvidiaGpus: false, cpuFlags: avx512})["OPENBLAS_CORETYPE"], "SkylakeX");
        assert.equal(rankEnvironment(descriptor, {OPENBLAS_CORETYPE: "Zen"}, {cpus: 8, hasNvidiaGpus: false, cpuFlags: avx512})["OPENBLAS_CORETYPE"], undefined);
        assert.equal(rankEnvironment(descriptor, {}, {cpus: 8, hasNvidiaGpus: false, cpuFlags: noFlags})["OPENBLAS_CORETYPE"], undefined);
    });
});

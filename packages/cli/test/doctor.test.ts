// `mixz doctor`: the GPU section on this machine (CI and developer machines have no driver, no
// cuBLAS and no NCCL: the section must say so, name where it searched, and leave the exit code
// alone), and the section's lines for a machine with GPUs (formatted from a probe object).
import assert from "node:assert/strict";
import {describe, it} from "node:test";

import {runCli} from "@mixz/cli";
import {cudaInfo, type NativeCudaProbe} from "@mixz/engine";

import {formatGpu} from "../src/commands/doctorCommand.js";

async function mixz(...argv: string[]): Promise<{code: number; out: string; err: string}> {
    let out = "";
    let err = "";
    const code = await runCli(argv, {out: (text) => (out += text), err: (text) => (err += text)});
    return {code, out, err};
}

describe("mixz doctor: GPU section", () => {
    it("reports the driver, devices, cuBLAS, NCCL and the build's backends, and a missing GPU does not fail", async () => {
        const run = await mixz("doctor");
        assert.equal(run.code, 0, run.err);
        // The CPU lines stay first, as before.
        assert.match(run.out, /^native {2}mixz /);
        assert.match(run.out, /\ncpu {5}avx2 /);
        assert.match(run.out, /\ngpu {5}driver /);
        assert.match(run.out, /\ncublas {2}/);
        assert.match(run.out, /\nnccl {4}/);
        assert.match(run.out, /\nbackend (cpu, cuda|cpu only)/);
        const probe = cudaInfo();
        if (!probe.driver.found) {
            assert.match(run.out, /\ngpu {5}driver none: libcuda\.so\.1 not found; searched: the libraries already loaded, dlopen\(libcuda\.so\.1\)/);
            assert.match(run.out, /\n {8}devices: none\n/);
        }
        if (!probe.cublas.found) {
            assert.match(run.out, /\ncublas {2}not found: libcublas\.so\.13 not found; searched: .*\/usr\/local\/cuda\/lib64\/libcublas\.so\.13/);
        }
        if (!probe.nccl.found) assert.match(run.out, /\nnccl {4}not found: libnccl\.so\.2 not found; searched: /);
    });

    it("--json carries the probe object under gpu", async () => {
        const run = await mixz("doctor", "--json");
        assert.equal(run.code, 0, run.err);
        const report = JSON.parse(run.out) as {ok: boolean; gpu: NativeCudaProbe; native: unknown};
        assert.equal(report.ok, true);
        assert.deepEqual(report.gpu, cudaInfo());
    });

    it("lists each device with its index, name, sm_XY, memory and SMs", () => {
        const library = (version: string, path: string) => ({found: true, path, version, error: null});
        const text = formatGpu({
            cudaCompiled: true,
            driver: library("13.0", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"),
            driverVersion: 13000,
            deviceError: null,
            devices: [
                {ordinal: 0, name: "NVIDIA H100 80GB HBM3", major: 9, minor: 0, totalBytes: 85_030_715_392, multiprocessors: 132, pciBusId: "0000:3B:00.0"}
            ],
            cublas: library("13.0.2", "/site/nvidia/cu13/lib/libcublas.so.13"),
            nccl: library("2.28.3", "/site/nvidia/nccl/lib/libnccl.so.2")
        });
        assert.equal(
            text,
            [
                "gpu     driver CUDA 13.0 (/usr/lib/x86_64-linux-gnu/libcuda.so.1)",
                "        cuda:0 NVIDIA H100 80GB HBM3, sm_90, 79.2 GiB, 132 SMs, pci 0000:3B:00.0",
                "cublas  13.0.2 (/site/nvidia/cu13/lib/libcublas.so.13)",
                "nccl    2.28.3 (/site/nvidia/nccl/lib/libnccl.so.2)",
                "backend cpu, cuda (this build has the CUDA backend)",
                ""
            ].join("\n")
        );
    });

    it("says why there are no devices when a driver is there but cuInit failed", () => {
        const missing = {found: false, path: null, version: null, error: "libnccl.so.2 not found; searched: x"};
        const text = formatGpu({
            cudaCompiled: false,
            driver: {found: true, path: "/lib/libcuda.so.1", version: "13.0", error: null},
            driverVersion: 13000,
            deviceError: "cuInit: CUDA_ERROR_NO_DEVICE (100)",
            devices: [],
            cublas: missing,
            nccl: missing
        });
        assert.match(text, /\n {8}devices: none \(cuInit: CUDA_ERROR_NO_DEVICE \(100\)\)\n/);
        assert.match(text, /\nbackend cpu only \(this build has no CUDA backend/);
    });
});

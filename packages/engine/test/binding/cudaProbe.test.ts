// cudaProbe() on whatever machine runs the tests: on CI and developer machines there is no driver,
// no cuBLAS and no NCCL, and every one of them must be a clean "not found" naming where it was
// searched; on a GPU machine the devices must look like devices. Also: the build compiled the CUDA
// backend exactly when it could find nvcc, and the addon never links a CUDA library dynamically.
import assert from "node:assert/strict";
import {execFileSync, spawnSync} from "node:child_process";
import {existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {delimiter, join} from "node:path";
import {after, before, describe, test} from "node:test";
import {fileURLToPath} from "node:url";

import {cudaInfo, nativeInfo, probeNative, resolveBindingPath} from "@mixz/engine";
import type {NativeCudaLibrary} from "@mixz/engine";

const root = fileURLToPath(new URL("../../../../", import.meta.url));

function isFile(path: string): boolean {
    try {
        return statSync(path).isFile();
    } catch {
        return false;
    }
}

/** The nvcc scripts/build-native.mjs would find in this environment (the same order), or undefined. */
function findableNvcc(): string | undefined {
    if (process.env["MIXZ_NO_CUDA"] === "1") return undefined;
    const candidates: string[] = [];
    const explicit = process.env["MIXZ_NVCC"];
    if (explicit) candidates.push(explicit);
    for (const dir of (process.env["PATH"] ?? "").split(delimiter)) if (dir !== "") candidates.push(join(dir, "nvcc"));
    const cudaHome = process.env["CUDA_HOME"];
    if (cudaHome) candidates.push(join(cudaHome, "bin", "nvcc"));
    candidates.push("/usr/local/cuda/bin/nvcc");
    return candidates.find(isFile);
}

function assertLibraryShape(library: NativeCudaLibrary, soname: string): void {
    assert.deepEqual(Object.keys(library).sort(), ["error", "found", "path", "version"]);
    if (library.found) {
        assert.equal(typeof library.path, "string");
        assert.equal(library.error, null);
    } else {
        assert.equal(library.path, null);
        assert.equal(library.version, null);
        // The message names the library and every kind of place searched, in the documented order.
        const error = library.error ?? "";
        assert.ok(error.startsWith(`${soname} not found; searched: the libraries already loaded, dlopen(${soname})`), error);
        assert.ok(error.includes(`/usr/local/cuda/lib64/${soname}`), error);
        assert.ok(error.includes(`/usr/local/cuda/targets/x86_64-linux/lib/${soname}`), error);
    }
}

describe("cudaProbe", () => {
    let dir = "";
    before(() => {
        dir = mkdtempSync(join(tmpdir(), "mixz-cuda-probe-"));
    });
    after(() => {
        rmSync(dir, {recursive: true, force: true});
    });

    test("has its documented shape, and says not found cleanly for what is missing", () => {
        const probe = cudaInfo();
        assert.deepEqual(Object.keys(probe).sort(), [
            "cublas",
            "cudaCompiled",
            "deviceError",
            "devices",
            "driver",
            "driverVersion",
            "nccl"
        ]);
        assertLibraryShape(probe.driver, "libcuda.so.1");
        assertLibraryShape(probe.cublas, "libcublas.so.13");
        assertLibraryShape(probe.nccl, "libnccl.so.2");
        if (!probe.driver.found) {
            assert.equal(probe.driverVersion, 0);
            assert.deepEqual(probe.devices, []);
            assert.match(probe.driver.error ?? "", /no NVIDIA driver is installed/);
        } else {
            assert.ok(probe.driverVersion >= 12000, `driverVersion ${probe.driverVersion}`);
            assert.equal(probe.driver.version, `${Math.floor(probe.driverVersion / 1000)}.${(probe.driverVersion % 1000) / 10}`);
            for (const [index, device] of probe.devices.entries()) {
                assert.equal(device.ordinal, index);
                assert.ok(device.name.length > 0);
                assert.ok(device.major >= 5 && device.totalBytes > 0 && device.multiprocessors > 0, JSON.stringify(device));
            }
        }
        if (!probe.cublas.found) assert.match(probe.cublas.error ?? "", /pip install nvidia-cublas/);
    });

    test("answers in the probe process what it answers here", async () => {
        const probed = await probeNative();
        assert.deepEqual(probed.cuda, cudaInfo());
        assert.deepEqual(probed.build, nativeInfo());
    });

    test("searches Python's nvidia wheels on PYTHONPATH, and quotes why a file there does not load", () => {
        // A site-packages directory of our own with a libcublas.so.13 that is not an ELF file.
        const site = join(dir, "site");
        mkdirSync(join(site, "nvidia", "cu13", "lib"), {recursive: true});
        const fake = join(site, "nvidia", "cu13", "lib", "libcublas.so.13");
        writeFileSync(fake, "not a shared object\n");
        const script = `const m = {exports: {}}; process.dlopen(m, ${JSON.stringify(resolveBindingPath())});
process.stdout.write(JSON.stringify(m.exports.cudaProbe()));`;
        const child = spawnSync(process.execPath, ["-e", script], {
            encoding: "utf8",
            env: {...process.env, PYTHONPATH: site, LD_LIBRARY_PATH: ""}
        });
        assert.equal(child.status, 0, child.stderr);
        const probe = JSON.parse(child.stdout) as ReturnType<typeof cudaInfo>;
        if (probe.cublas.found) return; // a real cuBLAS on the soname path wins, as it should
        const error = probe.cublas.error ?? "";
        assert.ok(error.includes(`${fake}: `), error);
        assert.ok(error.includes(join(site, "nvidia", "nccl", "lib", "libcublas.so.13")), error);
        // The wheel directories come before the CUDA toolkit's.
        assert.ok(error.indexOf(fake) < error.indexOf("/usr/local/cuda/lib64"), error);
    });

    test("the CUDA backend is compiled exactly when the build can find nvcc", () => {
        const nvcc = findableNvcc();
        const {buildType} = nativeInfo();
        const archive = join(root, "native", "build", "cuda", buildType, "libmixz_cuda.a");
        if (nvcc === undefined) {
            assert.equal(cudaInfo().cudaCompiled, false, "no nvcc is findable, yet the addon has the CUDA backend");
            return;
        }
        assert.equal(cudaInfo().cudaCompiled, true, `${nvcc} is findable, yet the addon was built without the CUDA backend`);
        assert.ok(existsSync(archive), `${archive} is missing`);
        const members = execFileSync("ar", ["t", archive], {encoding: "utf8"}).split("\n");
        assert.ok(members.includes("cuda_backend.o"), members.join(", "));
    });

    test("the addon links no CUDA library dynamically (it loads without a driver or toolkit)", () => {
        const ldd = execFileSync("ldd", [resolveBindingPath()], {encoding: "utf8"});
        assert.doesNotMatch(ldd, /libcudart|libcublas|libnccl|libcuda\.so/);
    });
});

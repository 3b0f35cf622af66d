import {Command} from "commander";
import {probeNative, type NativeBuildInfo, type NativeCudaLibrary, type NativeCudaProbe} from "@mixz/engine";
import type {CliIo} from "../CliIo.js";
import {ExitCode} from "../ExitCode.js";

/**
 * `mixz doctor`: is this installation able to run ranks? Loads the native addon in a child process
 * (a broken binary cannot take the CLI down) and reports the Gloo transport and the BLAS library
 * it actually loaded, then the GPU side: the CUDA driver and its devices, cuBLAS and NCCL (found
 * at run time, each with where it was searched for when missing) and whether this build has the
 * CUDA backend. Exits 1 when a CPU library does not work; a GPU is optional, so a machine without
 * one (or without cuBLAS or NCCL) is reported, not failed.
 */
export function createDoctorCommand(io: CliIo, setExitCode: (code: number) => void): Command {
    return new Command("doctor")
        .description("check the native engine: Gloo transport, BLAS library, CPU features, CUDA driver, GPUs, cuBLAS, NCCL")
        .option("--json", "print the probe as one JSON object")
        .action(async (flags: {json?: boolean}) => {
            const {build: info, cuda} = await probeNative();
            const healthy = info.gloo.tcpDevice !== null && info.blas.sgemmOk;
            io.out(
                flags.json === true
                    ? `${JSON.stringify({ok: healthy, node: process.version, native: info, gpu: cuda})}\n`
                    : formatDoctor(info) + formatGpu(cuda)
            );
            if (!healthy) io.err("mixz: the native engine's libraries do not work on this machine (see above); rebuild with `npm run build:native`\n");
            setExitCode(healthy ? ExitCode.ok : ExitCode.failed);
        });
}

function formatDoctor(info: NativeBuildInfo): string {
    const yes = (flag: boolean): string => (flag ? "yes" : "no");
    const sanitizers = info.sanitizers.length === 0 ? "" : `, sanitizers ${info.sanitizers.join("+")}`;
    const device = info.gloo.tcpDevice ?? `FAILED (${info.gloo.tcpDeviceError ?? "unknown error"})`;
    return [
        `native  mixz ${info.version}, ${info.compiler}, ${info.buildType}${sanitizers}; node ${process.version}`,
        `gloo    ${info.gloo.version}, transports ${info.gloo.transports.join(",")}; loopback device: ${device}`,
        `blas    ${info.blas.config} (${info.blas.corename}, ${info.blas.threads} thread(s), ${info.blas.parallel})`,
        `        loaded from ${info.blas.library === "" ? "(unknown)" : info.blas.library}; sgemm check ${info.blas.sgemmOk ? "ok" : "FAILED"}`,
        `cpu     avx2 ${yes(info.cpu.avx2)}, fma ${yes(info.cpu.fma)}`
    ].join("\n") + "\n";
}

const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(1)} GiB`;

function formatLibrary(library: NativeCudaLibrary): string {
    if (!library.found) return `not found: ${library.error ?? "unknown error"}`;
    return `${library.version ?? "version unknown"} (${library.path ?? "path unknown"})`;
}

/** The GPU lines of `mixz doctor`: one per subject, devices one per line, indented like the rest. */
export function formatGpu(cuda: NativeCudaProbe): string {
    const lines: string[] = [];
    const driver = cuda.driver.found
        ? `CUDA ${cuda.driver.version ?? "?"} (${cuda.driver.path ?? "path unknown"})`
        : `none: ${cuda.driver.error ?? "unknown error"}`;
    lines.push(`gpu     driver ${driver}`);
    if (cuda.devices.length === 0) {
        lines.push(`        devices: none${cuda.deviceError === null ? "" : ` (${cuda.deviceError})`}`);
    }
    for (const device of cuda.devices) {
        const bus = device.pciBusId === "" ? "" : `, pci ${device.pciBusId}`;
        lines.push(
            `        cuda:${device.ordinal} ${device.name}, sm_${device.major}${device.minor}, ${gib(device.totalBytes)}, ${device.multiprocessors} SMs${bus}`
        );
    }
    lines.push(`cublas  ${formatLibrary(cuda.cublas)}`);
    lines.push(`nccl    ${formatLibrary(cuda.nccl)}`);
    lines.push(
        cuda.cudaCompiled
            ? "backend cpu, cuda (this build has the CUDA backend)"
            : "backend cpu only (this build has no CUDA backend: nvcc was not found when it was built)"
    );
    return `${lines.join("\n")}\n`;
}

import {Command} from "commander";
import {probeBinding, type NativeBuildInfo} from "@mixz/engine";
import type {CliIo} from "../CliIo.js";
import {ExitCode} from "../ExitCode.js";

/**
 * `mixz doctor`: is this installation able to run ranks? Loads the native addon in a child process
 * (a broken binary cannot take the CLI down) and reports the Gloo transport and the BLAS library
 * it actually loaded. Exits 1 when a library does not work.
 */
export function createDoctorCommand(io: CliIo, setExitCode: (code: number) => void): Command {
    return new Command("doctor")
        .description("check the native engine: Gloo transport, BLAS library, CPU features")
        .option("--json", "print the probe as one JSON object")
        .action(async (flags: {json?: boolean}) => {
            const info = await probeBinding();
            const healthy = info.gloo.tcpDevice !== null && info.blas.sgemmOk;
            io.out(flags.json === true ? `${JSON.stringify({ok: healthy, node: process.version, native: info})}\n` : formatDoctor(info));
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

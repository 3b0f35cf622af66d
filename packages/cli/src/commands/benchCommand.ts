import {writeFileSync} from "node:fs";
import {Command} from "commander";
import {formatQuantizeTable, parseSize, plotBusBandwidth, runQuantizeBench, sizeSequence} from "@mixz/bench";
import type {FloatDType, QuantBits} from "@mixz/engine";
import {ErrorCodes, InputError, MixzError} from "@mixz/protocol";
import type {CliIo} from "../CliIo.js";
import {ExitCode} from "../ExitCode.js";
import {parseIntegerFlag} from "../parseFlags.js";

interface BenchFlags {
    minbytes: string;
    maxbytes: string;
    stepfactor: string;
    stepbytes: string;
    iters: string;
    warmupIters: string;
    check: string;
    dtype: string;
    quant: string;
    blockSize: string;
    threads: string;
    json?: boolean;
    plot?: string;
}

const kCollectives = ["allgather", "reducescatter", "quantize"] as const;
type BenchTarget = (typeof kCollectives)[number];

/**
 * `mixz bench allgather|reducescatter|quantize`, with nccl-tests' flags and output conventions
 * (launchers.md §6): sizes from -b to -e stepping by -f (or -i), -n timed and -w warm-up
 * iterations, -c checking, bandwidths in GB/s = 10^9 B/s.
 */
export function createBenchCommand(io: CliIo, setExitCode: (code: number) => void): Command {
    return new Command("bench")
        .description("communication and quantization benchmarks (nccl-tests conventions)")
        .argument("<what>", `one of ${kCollectives.join(", ")}`)
        .option("-b, --minbytes <size>", "smallest size (K/M/G suffixes, 1024-based)", "32M")
        .option("-e, --maxbytes <size>", "largest size", "32M")
        .option("-f, --stepfactor <n>", "multiply the size by this between rows", "2")
        .option("-i, --stepbytes <size>", "add this many bytes between rows when -f is 1", "1M")
        .option("-n, --iters <n>", "timed iterations per size", "20")
        .option("-w, --warmup-iters <n>", "untimed warm-up iterations per size", "1")
        .option("-c, --check <0|1>", "check results (the #wrong column)", "1")
        .option("--dtype <type>", "fp32, fp16 or bf16", "fp32")
        .option("--quant <q>", "none, int8 or int4", "none")
        .option("--block-size <n>", "quantization block size (elements)", "4096")
        .option("--threads <n>", "quantize: threads (0 = all cores)", "0")
        .option("--json", "print one JSON object instead of the table")
        .option("--plot <file.svg>", "also draw busbw (or GB/s) against size as an SVG")
        .action(async (what: string, flags: BenchFlags) => {
            setExitCode(await runBench(what, flags, io));
        });
}

async function runBench(what: string, flags: BenchFlags, io: CliIo): Promise<number> {
    if (!(kCollectives as readonly string[]).includes(what)) {
        throw new InputError([{code: ErrorCodes.usage, path: "<what>", message: `'${what}' is not one of ${kCollectives.join(", ")}`}]);
    }
    const target = what as BenchTarget;
    const dtype = oneOf(flags.dtype, "--dtype", ["fp32", "fp16", "bf16"] as const);
    const quant = oneOf(flags.quant, "--quant", ["none", "int8", "int4"] as const);
    const sizes = sizeSequence(parseSize(flags.minbytes, "-b"), parseSize(flags.maxbytes, "-e"), parseIntegerFlag(flags.stepfactor, "-f", 1), parseSize(flags.stepbytes, "-i"));
    const iterations = parseIntegerFlag(flags.iters, "-n", 1);
    parseIntegerFlag(flags.warmupIters, "-w", 0);
    if (target !== "quantize") {
        throw new MixzError(ErrorCodes.notYetAvailable,
            `mixz bench ${target} needs the communicator, which is not in this build yet; \`mixz bench quantize\` works`, {category: "platform"});
    }
    if (quant === "none") throw new InputError([{code: ErrorCodes.usage, path: "--quant", message: "mixz bench quantize needs --quant int8 or int4"}]);
    const rows = await runQuantizeBench({
        sizes,
        dtype: dtype as FloatDType,
        bits: (quant === "int8" ? 8 : 4) as QuantBits,
        blockSize: parseIntegerFlag(flags.blockSize, "--block-size", 8),
        iterations,
        threads: parseIntegerFlag(flags.threads, "--threads", 0)
    });
    if (flags.json === true) io.out(`${JSON.stringify({benchmark: "quantize", dtype, quant, rows})}\n`);
    else io.out(formatQuantizeTable(rows, [`mixz bench quantize: ${dtype} → ${quant}, block ${flags.blockSize}, ${iterations} iterations, GB/s = 1e9 B/s of input`]));
    if (flags.plot !== undefined) {
        writeFileSync(flags.plot, plotBusBandwidth([
            {label: `quantize ${dtype}→${quant}`, points: rows.map((r) => ({size: r.size, busbw: r.quantize_gbps}))},
            {label: `dequantize ${quant}→${dtype}`, points: rows.map((r) => ({size: r.size, busbw: r.dequantize_out_gbps}))},
            {label: "memcpy, 1 thread", points: rows.map((r) => ({size: r.size, busbw: r.memcpy_gbps}))}
        ], `mixz bench quantize (${dtype}, ${quant})`).replace("bus bandwidth (GB/s)", "throughput (GB/s)"));
    }
    return ExitCode.ok;
}

function oneOf<T extends string>(value: string, flag: string, allowed: readonly T[]): T {
    if (!(allowed as readonly string[]).includes(value)) {
        throw new InputError([{code: ErrorCodes.usage, path: flag, message: `'${value}' is not one of ${allowed.join(", ")}`}]);
    }
    return value as T;
}

import {writeFileSync} from "node:fs";
import {hpzPlacementConflicts, schemaDefault} from "@mixz/config";
import {Command} from "commander";
import {fileURLToPath} from "node:url";
import {averageBusBandwidth, formatBenchTable, formatQuantizeTable, parseSize, plotBusBandwidth, runQuantizeBench, sizeSequence, type BenchCollective, type BenchReport, type BenchRow, type CollectiveBenchParams} from "@mixz/bench";
import {readEnvFiles, runJob} from "@mixz/launcher";
import {createLogger} from "@mixz/log";
import {buildPlan, readHostfile} from "@mixz/plan";
import {mixzVersion} from "../mixzVersion.js";
import type {FloatDType, QuantBits} from "@mixz/engine";
import {ErrorCodes, InputError} from "@mixz/protocol";
import type {CliIo} from "../CliIo.js";
import {ExitCode} from "../ExitCode.js";
import {parseChoiceFlag, parseIntegerFlag, parseSecondsFlag} from "../parseFlags.js";

interface BenchFlags {
    nproc?: string;
    hostfile?: string;
    masterPort?: string;
    hpz: string;
    transport: string;
    timeout: string;
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
        .option("--nproc <n>", "ranks on this machine (allgather, reducescatter)", "2")
        .option("-H, --hostfile <file>", "run the ranks on the hosts of a hostfile instead")
        .option("--master-port <port>", "coordinator port (default: a free one)", "0")
        .option("--hpz <h>", "all-gather over the hpZ group of h consecutive ranks (the intra-node path); 1 = the world", "1")
        .option("--transport <t>", "auto (shared memory within a host, Gloo across), shm or gloo", "auto")
        .option("--timeout <seconds>", "per-collective timeout", "120")
        .option("--dtype <type>", "fp32, fp16 or bf16", "fp32")
        .option("--quant <q>", "none, int8 or int4", "none")
        .option("--block-size <n>", "quantization block size (elements)", String(schemaDefault(["mixz", "quant_block_size"])))
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
    const dtype = parseChoiceFlag(flags.dtype, "--dtype", ["fp32", "fp16", "bf16"] as const);
    const quant = parseChoiceFlag(flags.quant, "--quant", ["none", "int8", "int4"] as const);
    const sizes = sizeSequence(parseSize(flags.minbytes, "-b"), parseSize(flags.maxbytes, "-e"), parseIntegerFlag(flags.stepfactor, "-f", 1), parseSize(flags.stepbytes, "-i"));
    const iterations = parseIntegerFlag(flags.iters, "-n", 1);
    parseIntegerFlag(flags.warmupIters, "-w", 0);
    if (target !== "quantize") {
        return runCollectiveBench(target, {dtype, quant, sizes, iterations, warmup: parseIntegerFlag(flags.warmupIters, "-w", 0)}, flags, io);
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

interface CommonSettings {
    readonly dtype: FloatDType;
    readonly quant: "none" | "int8" | "int4";
    readonly sizes: readonly number[];
    readonly iterations: number;
    readonly warmup: number;
}

/**
 * allgather / reducescatter: the ranks are started through the launcher (like any job), run
 * @mixz/bench's rank script, and rank 0 reports one row per size, which becomes the table.
 */
async function runCollectiveBench(collective: BenchCollective, settings: CommonSettings, flags: BenchFlags, io: CliIo): Promise<number> {
    if (collective === "reducescatter" && settings.quant !== "none") {
        throw new InputError([{code: ErrorCodes.usage, path: "--quant", message: "reducescatter runs unquantized; qgZ gradients come with the engine"}]);
    }
    const transport = parseChoiceFlag(flags.transport, "--transport", ["auto", "shm", "gloo"] as const);
    const hpz = parseIntegerFlag(flags.hpz, "--hpz", 1);
    const plan = buildPlan({
        ...(flags.hostfile === undefined ? {nproc: parseIntegerFlag(flags.nproc ?? "2", "--nproc", 1)} : {hostfile: readHostfile(flags.hostfile)}),
        masterPort: parseIntegerFlag(flags.masterPort ?? "0", "--master-port", 0)
    });
    const conflicts = hpzPlacementConflicts(hpz, {world: plan.world_size, nodeSizes: plan.nodes.map((node) => node.ranks.length)});
    if (conflicts.length > 0) throw new InputError(conflicts.map((message) => ({code: ErrorCodes.usage, path: "--hpz", message})));
    const timeoutMs = parseSecondsFlag(flags.timeout, "--timeout");
    const params: CollectiveBenchParams = {
        collective,
        sizes: settings.sizes,
        dtype: settings.dtype,
        quant: settings.quant,
        blockSize: parseIntegerFlag(flags.blockSize, "--block-size", 8),
        iterations: settings.iterations,
        warmup: settings.warmup,
        check: parseIntegerFlag(flags.check, "-c", 0) !== 0,
        hpz,
        transport,
        timeoutMs
    };
    const rows: BenchRow[] = [];
    const errors: string[] = [];
    const rowPrefix = /^\[[^\]]*:0\] MIXZ_BENCH_ROW (.*)$/;
    const code = await runJob({
        plan,
        script: fileURLToPath(import.meta.resolve("@mixz/bench/collectiveBenchRank")),
        args: [JSON.stringify(params)],
        cwd: process.cwd(),
        config: null,
        mixzVersion,
        envFiles: readEnvFiles(process.cwd()),
        joinTimeoutMs: 120_000,
        heartbeatIntervalMs: 2000,
        heartbeatMisses: 3,
        gracePeriodMs: 5000,
        logFormat: "pretty",
        ssh: {acceptNewHostKeys: false},
        sink: {
            out: (text) => {
                for (const line of text.split("\n")) {
                    const match = rowPrefix.exec(line);
                    if (match !== null) rows.push(JSON.parse(match[1]!) as BenchRow);
                    else if (/MIXZ_BENCH_ERROR/.test(line)) errors.push(line);
                    else if (line !== "") io.err(`${line}\n`);
                }
            },
            err: io.err,
            interactive: false
        },
        logger: createLogger({component: "bench", level: "warn"}),
        handleSignals: true
    });
    for (const error of errors) io.err(`mixz: ${error}\n`);
    if (code !== 0) return code;
    const ranks = hpz > 1 ? hpz : plan.world_size;
    const report: BenchReport = {collective, ranks, dtype: settings.dtype, quant: settings.quant, rows, avg_busbw: averageBusBandwidth(rows)};
    if (flags.json === true) io.out(`${JSON.stringify(report)}\n`);
    else {
        io.out(formatBenchTable(report, [
            `mixz bench ${collective}: ${ranks} ranks${hpz > 1 ? ` (hpZ groups of ${hpz} in a world of ${plan.world_size})` : ""}, transport ${transport}, ${settings.dtype}${settings.quant === "none" ? "" : ` quantized ${settings.quant} (block ${params.blockSize}; size and bandwidths count unquantized bytes)`}`,
            `iterations ${settings.iterations}, warm-up ${settings.warmup}, check ${params.check ? 1 : 0}; GB/s = 1e9 B/s; busbw = algbw × (n-1)/n`
        ]));
    }
    if (flags.plot !== undefined) {
        writeFileSync(flags.plot, plotBusBandwidth([{label: `${settings.dtype}${settings.quant === "none" ? "" : ` ${settings.quant}`}, ${ranks} ranks`, points: rows}], `mixz bench ${collective}`));
    }
    const wrong = rows.reduce((sum, row) => sum + (row.wrong ?? 0), 0);
    return wrong === 0 ? ExitCode.ok : ExitCode.failed;
}

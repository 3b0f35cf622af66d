import {existsSync, statSync, type Stats} from "node:fs";
import {resolve} from "node:path";
import {Command, Option} from "commander";
import {readConfigFile, type ConfigResult} from "@mixz/config";
import {readEnvFiles, resolveSshTarget, runJob} from "@mixz/launcher";
import {createLogger, type LogFormat, type LogLevel} from "@mixz/log";
import {buildPlan, formatPlanJson, formatPlanTable, readHostfile, type PlanRequest, type SshReach, type WorldPlan} from "@mixz/plan";
import {ErrorCodes, InputError, type Problem} from "@mixz/protocol";
import {mixzVersion} from "../mixzVersion.js";
import type {CliIo} from "../CliIo.js";
import {ExitCode} from "../ExitCode.js";
import {formatWarnings} from "../formatDiagnostics.js";
import {parseChoiceFlag, parseIntegerFlag, parseSecondsFlag, pickAlias} from "../parseFlags.js";

/** Options of `mixz launch` as commander delivers them (strings; aliases separate). */
export interface LaunchFlags {
    hostfile?: string;
    include?: string;
    exclude?: string;
    numNodes?: string;
    num_nodes?: string;
    numGpus?: string;
    num_gpus?: string;
    num_accelerators?: string;
    nproc?: string;
    masterAddr?: string;
    master_addr?: string;
    masterPort?: string;
    master_port?: string;
    config?: string;
    forceSsh?: boolean;
    dryRun?: boolean;
    json?: boolean;
    joinTimeout?: string;
    heartbeatInterval?: string;
    heartbeatMisses?: string;
    gracePeriod?: string;
    logDir?: string;
    consoleRanks?: string;
    logFormat?: string;
    sshPort?: string;
    sshAcceptNewHostKeys?: boolean;
}

export function createLaunchCommand(io: CliIo, setExitCode: (code: number) => void): Command {
    return new Command("launch")
        .description("start a training script on every rank of the world (one rank per slot of each host)")
        .argument("<script>", "the training script (.ts or .js) every rank runs")
        .argument("[args...]", "arguments passed to the script")
        .option("-H, --hostfile <file>", "DeepSpeed hostfile: one 'HOST slots=N' per line")
        .option("-i, --include <spec>", "use only these hosts/slots: NAME[:SLOT[,SLOT...]][@NAME...]")
        .option("-e, --exclude <spec>", "leave out these hosts/slots (same syntax as --include)")
        .option("--num-nodes <n>", "use the first N hosts of the hostfile")
        .addOption(new Option("--num_nodes <n>").hideHelp())
        .option("--num-gpus <n>", "use slots 0..G-1 of every host (without a hostfile: G local ranks)")
        .addOption(new Option("--num_gpus <n>").hideHelp())
        .addOption(new Option("--num_accelerators <n>").hideHelp())
        .option("--nproc <n>", "number of ranks on this machine, for runs without a hostfile (default 1)")
        .option("--master-addr <addr>", "address the ranks use to reach the coordinator (default: 127.0.0.1 when every host is local, else this machine's name)")
        .addOption(new Option("--master_addr <addr>").hideHelp())
        .option("--master-port <port>", "coordinator port; 0 picks a free one (default 29500)")
        .addOption(new Option("--master_port <port>").hideHelp())
        .option("-c, --config <file>", "DeepSpeed JSON config, validated against the world before anything starts")
        .option("--force-ssh", "reach local hosts over SSH too")
        .option("--ssh-port <port>", "SSH port for every host (default: ~/.ssh/config Port, else 22)")
        .option("--ssh-accept-new-host-keys", "accept and record host keys not yet in ~/.ssh/known_hosts (changed keys are always refused)")
        .option("--join-timeout <seconds>", "how long every rank has to join (default 300)")
        .option("--heartbeat-interval <seconds>", "ranks send a heartbeat this often (default 2)")
        .option("--heartbeat-misses <n>", "a rank is lost after this many missed heartbeats (default 3)")
        .option("--grace-period <seconds>", "between SIGTERM and SIGKILL when stopping ranks (default 5)")
        .option("--log-dir <dir>", "also write each rank's output to DIR/rank-<RANK>.log")
        .option("--console-ranks <list>", "show only these ranks' output on the console, e.g. 0 or 0,2-3")
        .option("--log-format <format>", "the launcher's own logs: pretty or json (default pretty)")
        .option("--dry-run", "print the world plan and start nothing")
        .option("--json", "with --dry-run: print the plan as one JSON object")
        .passThroughOptions()
        .action(async (script: string, args: string[], flags: LaunchFlags) => {
            setExitCode(await runLaunch(script, args, flags, io));
        });
}

/** Flag combinations and values that no plan can fix. */
function checkLaunchFlags(script: string, flags: LaunchFlags): void {
    const problems: Problem[] = [];
    if (script.trim() === "") problems.push({code: ErrorCodes.usage, path: "<script>", message: "is empty: name the training script to run"});
    if (flags.hostfile?.trim() === "") problems.push({code: ErrorCodes.usage, path: "--hostfile", message: "is empty: name a hostfile, or leave the flag out to run on this machine"});
    if (flags.config?.trim() === "") problems.push({code: ErrorCodes.usage, path: "--config", message: "is empty: name a DeepSpeed JSON config"});
    if (flags.json === true && flags.dryRun !== true) problems.push({code: ErrorCodes.usage, path: "--json", message: "only applies to --dry-run"});
    if (problems.length > 0) throw new InputError(problems);
}

/** Turns the flags into a plan request; every number is checked here, at the edge. */
export function planRequestFromFlags(flags: LaunchFlags): PlanRequest {
    const integer = (flag: string, ...values: Array<string | undefined>): number | undefined => {
        const value = pickAlias(flag, values);
        return value === undefined ? undefined : parseIntegerFlag(value, flag);
    };
    const numNodes = integer("--num_nodes", flags.numNodes, flags.num_nodes);
    const numGpus = integer("--num_gpus", flags.numGpus, flags.num_gpus, flags.num_accelerators);
    const nproc = integer("--nproc", flags.nproc);
    const masterPort = integer("--master-port", flags.masterPort, flags.master_port);
    const masterAddr = pickAlias("--master-addr", [flags.masterAddr, flags.master_addr]);
    return {
        ...(flags.hostfile === undefined ? {} : {hostfile: readHostfile(flags.hostfile)}),
        ...(flags.include === undefined ? {} : {include: flags.include}),
        ...(flags.exclude === undefined ? {} : {exclude: flags.exclude}),
        ...(numNodes === undefined ? {} : {numNodes}),
        ...(numGpus === undefined ? {} : {numGpus}),
        ...(nproc === undefined ? {} : {nproc}),
        ...(masterAddr === undefined ? {} : {masterAddr}),
        ...(masterPort === undefined ? {} : {masterPort}),
        ...(flags.forceSsh === true ? {forceSsh: true} : {})
    };
}

/**
 * Checks the config against the plan's world (batch arithmetic, hpZ groups inside nodes) and
 * against what the engine runs (stage 3, no offload, an optimizer), before anything starts.
 */
export function checkConfigAgainstPlan(file: string, plan: WorldPlan): ConfigResult {
    const nodeSizes = plan.nodes.map((node) => node.ranks.length);
    return readConfigFile(file, {
        file,
        engine: true,
        worldSize: plan.world_size,
        nodeSizes,
        gpusPerNode: Math.max(...nodeSizes)
    });
}

/** Job settings from flags, checked at the edge (seconds may be fractional; counts may not). */
function jobSettings(flags: LaunchFlags) {
    const seconds = (value: string | undefined, flag: string, fallback: number): number =>
        value === undefined ? fallback * 1000 : parseSecondsFlag(value, flag);
    const format = parseChoiceFlag<LogFormat>(flags.logFormat ?? "pretty", "--log-format", ["pretty", "json"]);
    return {
        joinTimeoutMs: seconds(flags.joinTimeout, "--join-timeout", 300),
        heartbeatIntervalMs: seconds(flags.heartbeatInterval, "--heartbeat-interval", 2),
        heartbeatMisses: flags.heartbeatMisses === undefined ? 3 : parseIntegerFlag(flags.heartbeatMisses, "--heartbeat-misses", 1),
        gracePeriodMs: seconds(flags.gracePeriod, "--grace-period", 5),
        logFormat: format,
        ...(flags.sshPort === undefined ? {} : {sshPort: parseIntegerFlag(flags.sshPort, "--ssh-port", 1)}),
        ...(flags.consoleRanks === undefined ? {} : {consoleRanks: parseRankList(flags.consoleRanks)})
    };
}

/** `0,2-3` → {0, 2, 3}. */
function parseRankList(text: string): Set<number> {
    const ranks = new Set<number>();
    for (const part of text.split(",")) {
        const match = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
        const first = match === null ? NaN : Number(match[1]);
        const last = match?.[2] === undefined ? first : Number(match[2]);
        if (!Number.isSafeInteger(first) || !Number.isSafeInteger(last) || last < first || last - first > 65536) {
            throw new InputError([{code: ErrorCodes.usage, path: "--console-ranks", message: `'${part}' is not a rank or a range like 2-5`}]);
        }
        for (let rank = first; rank <= last; rank++) ranks.add(rank);
    }
    return ranks;
}

/** How each SSH node will be reached, for the dry run (reads ~/.ssh/config; connects to nothing). */
function sshReach(plan: WorldPlan, sshPort: number | undefined): Map<string, SshReach> {
    const reach = new Map<string, SshReach>();
    for (const node of plan.nodes) {
        if (node.spawn !== "ssh") continue;
        const target = resolveSshTarget(node.host, sshPort === undefined ? {} : {sshPort});
        reach.set(node.host, {user: target.user, hostName: target.hostName, port: target.port});
    }
    return reach;
}

/**
 * What can be checked on this machine before anything starts: the script exists (remote hosts
 * see the same path: mixz assumes a shared filesystem, as DeepSpeed does), the log directory can
 * be one, the console filter names ranks of this world, the log level is one pino knows.
 */
function checkLaunchInputs(scriptPath: string, plan: WorldPlan, settings: ReturnType<typeof jobSettings>, logDir: string | undefined): void {
    const problems: Problem[] = [];
    let stat: Stats | undefined;
    try {
        stat = statSync(scriptPath);
    } catch {
        problems.push({code: ErrorCodes.fileRead, file: scriptPath, path: "<script>", message: "no such file: name the training script every rank runs"});
    }
    if (stat !== undefined && !stat.isFile()) problems.push({code: ErrorCodes.fileRead, file: scriptPath, path: "<script>", message: "is not a file"});
    if (logDir !== undefined && existsSync(logDir) && !statSync(logDir).isDirectory()) {
        problems.push({code: ErrorCodes.usage, path: "--log-dir", message: `${logDir} exists and is not a directory`});
    }
    const outside = [...(settings.consoleRanks ?? [])].filter((rank) => rank >= plan.world_size);
    if (outside.length > 0) {
        problems.push({code: ErrorCodes.usage, path: "--console-ranks", message: `rank ${outside[0]} is not in this world of ${plan.world_size} rank(s)`});
    }
    const level = process.env["MIXZ_LOG_LEVEL"];
    if (level !== undefined && !kLogLevels.includes(level as LogLevel)) {
        problems.push({code: ErrorCodes.usage, path: "MIXZ_LOG_LEVEL", message: `'${level}' is not one of ${kLogLevels.join(", ")}`});
    }
    if (problems.length > 0) throw new InputError(problems);
}

const kLogLevels: readonly LogLevel[] = ["trace", "debug", "info", "warn", "error", "fatal", "silent"];

async function runLaunch(script: string, args: readonly string[], flags: LaunchFlags, io: CliIo): Promise<number> {
    checkLaunchFlags(script, flags);
    const plan = buildPlan(planRequestFromFlags(flags));
    const settings = jobSettings(flags);
    const cwd = process.cwd();
    const logDir = flags.logDir === undefined ? undefined : resolve(cwd, flags.logDir);
    if (flags.dryRun !== true) checkLaunchInputs(resolve(cwd, script), plan, settings, logDir);
    const config = flags.config === undefined ? undefined : checkConfigAgainstPlan(flags.config, plan);
    if (config !== undefined) io.err(formatWarnings(config.warnings));
    const envFiles = readEnvFiles(cwd);
    if (flags.dryRun === true) {
        const reach = sshReach(plan, settings.sshPort);
        io.out(`${flags.json === true ? formatPlanJson(plan, reach) : formatPlanTable(plan, reach)}\n`);
        return ExitCode.ok;
    }
    return runJob({
        plan,
        script: resolve(cwd, script),
        args,
        cwd,
        config: config?.config ?? null,
        mixzVersion,
        envFiles,
        joinTimeoutMs: settings.joinTimeoutMs,
        heartbeatIntervalMs: settings.heartbeatIntervalMs,
        heartbeatMisses: settings.heartbeatMisses,
        gracePeriodMs: settings.gracePeriodMs,
        ...(logDir === undefined ? {} : {logDir}),
        ...(settings.consoleRanks === undefined ? {} : {consoleRanks: settings.consoleRanks}),
        logFormat: settings.logFormat,
        ssh: {
            acceptNewHostKeys: flags.sshAcceptNewHostKeys === true,
            ...(settings.sshPort === undefined ? {} : {port: settings.sshPort})
        },
        sink: {out: io.out, err: io.err, interactive: process.stdout.isTTY === true},
        logger: createLogger({component: "launcher", format: settings.logFormat, level: (process.env["MIXZ_LOG_LEVEL"] as LogLevel | undefined) ?? "warn"}),
        handleSignals: true
    });
}

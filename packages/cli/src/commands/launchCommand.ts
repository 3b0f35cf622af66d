import {Command, Option} from "commander";
import {readConfigFile, type ConfigResult} from "@mixz/config";
import {buildPlan, formatPlanJson, formatPlanTable, readHostfile, type PlanRequest, type WorldPlan} from "@mixz/plan";
import {ErrorCodes, InputError, MixzError, type Problem} from "@mixz/protocol";
import type {CliIo} from "../CliIo.js";
import {ExitCode} from "../ExitCode.js";
import {formatWarnings} from "../formatDiagnostics.js";
import {parseIntegerFlag, pickAlias} from "../parseFlags.js";

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
        .option("--dry-run", "print the world plan and start nothing")
        .option("--json", "with --dry-run: print the plan as one JSON object")
        .passThroughOptions()
        .action((script: string, args: string[], flags: LaunchFlags) => {
            setExitCode(runLaunch(script, args, flags, io));
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

/** Checks the config against the plan's world: batch arithmetic, hpZ groups inside nodes. */
export function checkConfigAgainstPlan(file: string, plan: WorldPlan): ConfigResult {
    const nodeSizes = plan.nodes.map((node) => node.ranks.length);
    return readConfigFile(file, {
        file,
        worldSize: plan.world_size,
        nodeSizes,
        gpusPerNode: Math.max(...nodeSizes)
    });
}

function runLaunch(script: string, _args: readonly string[], flags: LaunchFlags, io: CliIo): number {
    checkLaunchFlags(script, flags);
    const plan = buildPlan(planRequestFromFlags(flags));
    const config = flags.config === undefined ? undefined : checkConfigAgainstPlan(flags.config, plan);
    if (config !== undefined) io.err(formatWarnings(config.warnings));
    if (flags.dryRun === true) {
        io.out(`${flags.json === true ? formatPlanJson(plan) : formatPlanTable(plan)}\n`);
        return ExitCode.ok;
    }
    io.out(`${formatPlanTable(plan)}\n`);
    throw new MixzError(
        ErrorCodes.notYetAvailable,
        "starting ranks is not available in this version of mixz yet (the coordinator and rank daemons are being built); " +
            "`mixz launch --dry-run` shows the plan that would run",
        {category: "platform"}
    );
}

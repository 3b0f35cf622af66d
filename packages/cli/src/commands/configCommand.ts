import {Command} from "commander";
import {readConfigFile, type ConfigContext} from "@mixz/config";
import {InputError} from "@mixz/protocol";
import type {CliIo} from "../CliIo.js";
import {ExitCode} from "../ExitCode.js";
import {formatWarnings} from "../formatDiagnostics.js";
import {parseIntegerFlag} from "../parseFlags.js";

interface CheckFlags {
    worldSize?: string;
    gpusPerNode?: string;
    hiddenSize?: string;
    json?: boolean;
}

export function createConfigCommand(io: CliIo, setExitCode: (code: number) => void): Command {
    const config = new Command("config").description("work with DeepSpeed JSON configs");
    config
        .command("check")
        .description("validate a DeepSpeed config and print it with every default filled in")
        .argument("<file>", "DeepSpeed JSON config")
        .option("--world-size <n>", "data-parallel world size to check batch sizes and hpZ against")
        .option("--gpus-per-node <n>", "ranks per node, to check that hpZ groups stay inside a node")
        .option("--hidden-size <n>", "model hidden size, to resolve Hugging Face \"auto\" bucket sizes")
        .option("--json", "print one JSON object: {ok, file, config | problems, warnings, unchecked}")
        .action((file: string, flags: CheckFlags) => {
            setExitCode(runConfigCheck(file, flags, io));
        });
    return config;
}

function runConfigCheck(file: string, flags: CheckFlags, io: CliIo): number {
    // The config is checked for mixz's engine: what initialize() would refuse, this refuses.
    const context = (): ConfigContext => ({
        file,
        engine: true,
        ...(flags.worldSize === undefined ? {} : {worldSize: positive(flags.worldSize, "--world-size")}),
        ...(flags.gpusPerNode === undefined ? {} : {gpusPerNode: positive(flags.gpusPerNode, "--gpus-per-node")}),
        ...(flags.hiddenSize === undefined ? {} : {hiddenSize: positive(flags.hiddenSize, "--hidden-size")})
    });
    if (flags.json !== true) {
        const result = readConfigFile(file, context());
        io.err(formatWarnings(result.warnings));
        for (const item of result.unchecked) io.err(`mixz: note: not checked: ${item}\n`);
        io.out(`${JSON.stringify(result.config, null, 2)}\n`);
        return ExitCode.ok;
    }
    // --json: a machine reads stdout, so problems go there too, inside the one object.
    try {
        const result = readConfigFile(file, context());
        io.out(`${JSON.stringify({ok: true, file, config: result.config, warnings: result.warnings, unchecked: result.unchecked})}\n`);
        return ExitCode.ok;
    } catch (error) {
        if (!(error instanceof InputError)) throw error;
        io.out(`${JSON.stringify({ok: false, file, problems: error.problems})}\n`);
        return ExitCode.invalidInput;
    }
}

function positive(value: string, flag: string): number {
    return parseIntegerFlag(value, flag, 1);
}

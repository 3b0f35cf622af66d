import {Command} from "commander";
import type {CliIo} from "./CliIo.js";
import {createBenchCommand} from "./commands/benchCommand.js";
import {createConfigCommand} from "./commands/configCommand.js";
import {createDoctorCommand} from "./commands/doctorCommand.js";
import {createLaunchCommand} from "./commands/launchCommand.js";
import {mixzVersion} from "./mixzVersion.js";


/**
 * A fresh command tree per call, so tests can run many CLIs in one process (commander #1565).
 * Commander's own exits are turned into exceptions (`exitOverride`) so that `runCli` alone decides
 * exit codes; output goes through `io`.
 */
export function createProgram(io: CliIo, setExitCode: (code: number) => void): Command {
    const program = new Command("mixz")
        .description("distributed LoRA training with Mixed Precision ZeRO++ (qwZ + hpZ), from TypeScript")
        .version(mixzVersion, "-V, --version")
        .enablePositionalOptions()
        .showSuggestionAfterError(true);
    program.addCommand(createLaunchCommand(io, setExitCode));
    program.addCommand(createConfigCommand(io, setExitCode));
    program.addCommand(createDoctorCommand(io, setExitCode));
    program.addCommand(createBenchCommand(io, setExitCode));
    configureTree(program, io);
    return program;
}

function configureTree(command: Command, io: CliIo): void {
    command.exitOverride().configureOutput({
        writeOut: io.out,
        writeErr: io.err,
        // Commander prefixes "error: " and puts its "(Did you mean …?)" on a second line; mixz
        // prints every diagnostic as one line that starts with its own name.
        outputError: (text, write) => write(`mixz: ${text.replace(/^error: /, "").trim().replace(/\s*\n\s*/g, " ")}\n`)
    });
    for (const sub of command.commands) configureTree(sub, io);
}


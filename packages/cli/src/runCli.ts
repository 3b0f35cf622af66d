import {CommanderError} from "commander";
import {InputError, MixzError} from "@mixz/protocol";
import {processIo, type CliIo} from "./CliIo.js";
import {createProgram} from "./createProgram.js";
import {ExitCode} from "./ExitCode.js";
import {formatProblems} from "./formatDiagnostics.js";

/**
 * Runs the CLI on `argv` (without node and the script path) and returns the exit code. The one
 * place where errors become output and exit codes: a user mistake is one line per problem and
 * exit 2, never a stack trace; a defect of mixz prints its stack only with MIXZ_DEBUG=1.
 */
export async function runCli(argv: readonly string[], io: CliIo = processIo): Promise<number> {
    let exitCode: number = ExitCode.ok;
    const program = createProgram(io, (code) => {
        exitCode = code;
    });
    try {
        await program.parseAsync([...argv], {from: "user"});
        return exitCode;
    } catch (error) {
        return reportError(error, io);
    }
}

function reportError(error: unknown, io: CliIo): number {
    if (error instanceof CommanderError) {
        // Help and --version "fail" with exit code 0; commander already printed its message.
        return error.exitCode === 0 ? ExitCode.ok : ExitCode.invalidInput;
    }
    if (error instanceof InputError) {
        io.err(formatProblems(error.problems));
        return ExitCode.invalidInput;
    }
    if (error instanceof MixzError) {
        io.err(`mixz: ${error.message} [${error.code}]\n`);
        return error.category === "user" ? ExitCode.invalidInput : ExitCode.failed;
    }
    const detail = process.env["MIXZ_DEBUG"] === "1" && error instanceof Error ? `\n${error.stack ?? ""}` : "";
    io.err(`mixz: internal error: ${error instanceof Error ? error.message : String(error)}${detail}\n` +
        "mixz: this is a bug in mixz; run again with MIXZ_DEBUG=1 for the stack trace and report it\n");
    return ExitCode.failed;
}

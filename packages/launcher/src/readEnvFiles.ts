import {readFileSync} from "node:fs";
import {homedir} from "node:os";
import {join} from "node:path";
import {ErrorCodes, InputError, type Problem} from "@mixz/protocol";
import {kEnvNamePattern} from "./ssh/buildRemoteCommand.js";

/**
 * Prefixes of launcher variables forwarded to every rank, local or remote: DeepSpeed's list
 * (NCCL, PYTHON, MLFLOW, MV2, UCX) plus mixz's own and the thread-count knobs that matter on CPU
 * hosts. Local ranks inherit the launcher's whole environment anyway; SSH ranks get only these,
 * so that the launcher's PATH, HOME or SSH_AUTH_SOCK never override the remote host's.
 */
export const kForwardedPrefixes = ["NCCL", "PYTHON", "MLFLOW", "MV2", "UCX", "MIXZ_", "OMP_", "OPENBLAS_", "GLOO_"] as const;

/** Env files read in this order, each from the home directory and then the working directory; later wins. */
export const kEnvFileNames = [".deepspeed_env", ".mixz_env"] as const;


export function forwardedEnvironment(env: NodeJS.ProcessEnv): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [name, value] of Object.entries(env)) {
        if (value !== undefined && kForwardedPrefixes.some((prefix) => name.startsWith(prefix))) out[name] = value;
    }
    return out;
}

/**
 * Parses a `.mixz_env` / `.deepspeed_env` file: `KEY=VALUE` per line, split at the first `=` (a
 * value may contain `=`), optional `export ` prefix, blank lines and `#` comments skipped (DeepSpeed
 * crashes on those), surrounding quotes of the value removed. Every bad line is an error naming
 * the file and line.
 */
export function parseEnvFile(text: string, file: string): Record<string, string> {
    const out: Record<string, string> = {};
    const problems: Problem[] = [];
    text.split(/\r?\n/).forEach((raw, index) => {
        const line = raw.trim();
        if (line === "" || line.startsWith("#")) return;
        const body = line.startsWith("export ") ? line.slice(7).trimStart() : line;
        const equals = body.indexOf("=");
        const name = equals < 0 ? body : body.slice(0, equals).trim();
        if (equals < 0 || !kEnvNamePattern.test(name)) {
            problems.push({
                code: ErrorCodes.usage,
                file,
                line: index + 1,
                message: equals < 0 ? `expected KEY=VALUE, got '${line}'` : `'${name}' is not a valid variable name`
            });
            return;
        }
        let value = body.slice(equals + 1).trim();
        if (value.length >= 2 && (value[0] === '"' || value[0] === "'") && value.at(-1) === value[0]) value = value.slice(1, -1);
        out[name] = value;
    });
    if (problems.length > 0) throw new InputError(problems);
    return out;
}

/** Variables from the env files of `home` and `cwd` (both optional; cwd's win). */
export function readEnvFiles(cwd: string, home: string = homedir()): Record<string, string> {
    const out: Record<string, string> = {};
    const directories = home === cwd ? [cwd] : [home, cwd];
    for (const directory of directories) {
        for (const name of kEnvFileNames) {
            const path = join(directory, name);
            let text: string;
            try {
                text = readFileSync(path, "utf8");
            } catch (error) {
                if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
                throw new InputError([{code: ErrorCodes.fileRead, file: path, message: `cannot read env file: ${(error as Error).message}`}]);
            }
            Object.assign(out, parseEnvFile(text, path));
        }
    }
    return out;
}

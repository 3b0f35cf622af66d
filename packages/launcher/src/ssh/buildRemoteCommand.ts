import {shellQuote} from "./shellQuote.js";

/** Names a remote environment variable may have (POSIX portable names). */
export const kEnvNamePattern = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface RemoteCommandSpec {
    readonly cwd: string;
    readonly env: Readonly<Record<string, string>>;
}

/**
 * The command line of one exec channel: `cd '<cwd>' && exec env 'K=V'… '<argv0>' '<argv1>'…`.
 *
 * - `cd … &&`: a missing directory fails the command (the shell's message reaches stderr, exit 1)
 *   instead of running the rank somewhere else.
 * - `exec`: the shell is replaced, so the command is the session's process and sees the channel's
 *   stdin EOF directly.
 * - `env`: variables travel in the command line rather than as SSH `env` requests, which sshd drops
 *   unless its AcceptEnv lists them. Secrets (the job token) must go through stdin instead: a command
 *   line is visible in `ps` on the remote host.
 *
 * argv[0] may not start with `-` nor contain `=`, which `env` would read as an option or an
 * assignment; mixz always runs an absolute path there.
 */
export function buildRemoteCommand(argv: readonly string[], spec: RemoteCommandSpec): string {
    const program = argv[0];
    if (program === undefined || program === "") throw new RangeError("remote command: argv must start with a program");
    if (program.startsWith("-") || program.includes("=")) {
        throw new RangeError(`remote command: program ${JSON.stringify(program)} would be read by env as an option or an assignment`);
    }
    if (spec.cwd === "") throw new RangeError("remote command: cwd must not be empty");
    const assignments: string[] = [];
    for (const [name, value] of Object.entries(spec.env)) {
        if (!kEnvNamePattern.test(name)) throw new RangeError(`remote command: invalid environment variable name ${JSON.stringify(name)}`);
        assignments.push(shellQuote(`${name}=${value}`));
    }
    const words = ["exec", "env", ...assignments, ...argv.map(shellQuote)];
    // A directory named like an option reads as one to cd; "./-x" is the same directory.
    const cwd = spec.cwd.startsWith("-") ? `./${spec.cwd}` : spec.cwd;
    return `cd ${shellQuote(cwd)} && ${words.join(" ")}`;
}

/**
 * Exit codes of `mixz` (DESIGN.md §4). Tools and people rely on them; one place decides them.
 * Beyond these, a failed job exits with its first failing rank's code (128+n for signal n).
 */
export const ExitCode = {
    ok: 0,
    /** The job could not start or was lost (SSH, rendezvous timeout, lost heartbeat), or mixz itself failed. */
    failed: 1,
    /** Invalid input (flags, config, hostfile); nothing was started. */
    invalidInput: 2,
    /** Interrupted by Ctrl-C. */
    interrupted: 130
} as const;

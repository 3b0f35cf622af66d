import {readFileSync} from "node:fs";
import {ErrorCodes, InputError, type Problem} from "@mixz/protocol";

/** One host line of a hostfile. */
export interface HostEntry {
    /** Host name or address, exactly as written. */
    readonly name: string;
    /** `slots=N`: how many ranks (GPUs, or CPU slots) this host offers; 0 means it takes no part. */
    readonly slots: number;
    /** `max_slots=M` (Open MPI's key): accepted for compatibility, not used to place ranks. */
    readonly maxSlots?: number;
    /** 1-based line of the entry, for error messages. */
    readonly line: number;
}

/** A parsed hostfile: hosts in file order (file order decides node ranks and global ranks). */
export interface Hostfile {
    /** The path as the user gave it, or a label such as `<inline>`. */
    readonly file: string;
    readonly hosts: readonly HostEntry[];
}

/** Slot counts above this are certainly typos (and would allocate absurd rank lists). */
export const kMaxSlotsPerHost = 4096;

/**
 * Characters that cannot appear in a host name because the filter syntax
 * (`NAME[:SLOT[,SLOT…]][@NAME…]`) uses them, or because they are the `KEY=VALUE` separator.
 * DeepSpeed accepts `user@host` in a hostfile but then cannot address it with --include/--exclude.
 */
const kReservedInName = /[:,@=]/;

/**
 * Parses DeepSpeed's hostfile grammar with the semantics DeepSpeed intends, and stricter checks:
 *
 *   # comment
 *   worker-0 slots=4
 *   worker-1 slots=4 max_slots=8   # trailing comment
 *
 * Each non-blank line that does not start with `#` is `HOST slots=N`, optionally followed by
 * `max_slots=M` and a `#` comment. Unlike DeepSpeed's regex (anchored only at the start),
 * `slots=4abc` is an error rather than 4, and any other trailing text is an error rather than
 * silently ignored. Every problem names the file and line; all problems are reported at once.
 */
export function parseHostfile(text: string, file: string): Hostfile {
    const problems: Problem[] = [];
    const hosts: HostEntry[] = [];
    const firstLine = new Map<string, number>();
    const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);

    lines.forEach((raw, index) => {
        const line = index + 1;
        const problem = (message: string, column?: number): void => {
            problems.push({code: ErrorCodes.hostfileSyntax, file, line, ...(column === undefined ? {} : {column}), message});
        };
        const hash = raw.indexOf("#");
        const content = (hash >= 0 ? raw.slice(0, hash) : raw).trim();
        if (content === "") return;
        const tokens = content.split(/\s+/);
        const name = tokens[0]!;
        const column = raw.indexOf(name) + 1;

        if (/^slots\s*=/i.test(name) || name.includes("=")) {
            problem(`'${content}' has no host name: expected 'HOSTNAME slots=N'`, column);
            return;
        }
        if (kReservedInName.test(name)) {
            problem(
                `host name '${name}' contains ':', ',' or '@', which --include/--exclude use as separators; ` +
                    "use a plain name or address (put a user name in ~/.ssh/config as User)",
                column
            );
            return;
        }
        const slotsToken = tokens[1];
        if (slotsToken === undefined) {
            problem(`host '${name}' has no slot count: write '${name} slots=N'`, column);
            return;
        }
        const slotsColumn = raw.indexOf(slotsToken, column - 1 + name.length) + 1;
        const slots = parseCount(slotsToken, "slots");
        if (typeof slots === "string") {
            problem(slots, slotsColumn);
            return;
        }
        let maxSlots: number | undefined;
        for (const token of tokens.slice(2)) {
            const tokenColumn = raw.indexOf(token, slotsColumn) + 1;
            if (/^max_slots=/i.test(token) && maxSlots === undefined) {
                const parsed = parseCount(token, "max_slots");
                if (typeof parsed === "string") {
                    problem(parsed, tokenColumn);
                    return;
                }
                if (parsed < slots) {
                    problem(`max_slots=${parsed} is less than slots=${slots}`, tokenColumn);
                    return;
                }
                maxSlots = parsed;
            } else {
                problem(`unexpected '${token}' after slots=${slots}: only max_slots=M and a # comment may follow`, tokenColumn);
                return;
            }
        }
        const first = firstLine.get(name);
        if (first !== undefined) {
            problem(`Hostfile contains multiple entries for ${name} (first at line ${first}); give each host once`, column);
            return;
        }
        firstLine.set(name, line);
        hosts.push(maxSlots === undefined ? {name, slots, line} : {name, slots, maxSlots, line});
    });

    if (problems.length > 0) throw new InputError(problems);
    if (hosts.length === 0) {
        throw new InputError([
            {
                code: ErrorCodes.hostfileEmpty,
                file,
                message: "Hostfile is empty or not formatted correctly: expected lines like 'worker-0 slots=4'"
            }
        ]);
    }
    return {file, hosts};
}

/** Reads and parses a hostfile; a missing or unreadable file is an error (never a silent local fallback). */
export function readHostfile(path: string): Hostfile {
    let text: string;
    try {
        text = readFileSync(path, "utf8");
    } catch (error) {
        const reason = (error as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" :
            (error as NodeJS.ErrnoException).code === "EISDIR" ? "is a directory, not a hostfile" :
            (error as Error).message;
        throw new InputError([
            {code: ErrorCodes.fileRead, file: path, path: "--hostfile", message: `cannot read hostfile: ${reason}`}
        ]);
    }
    return parseHostfile(text, path);
}

/** `slots=N` / `max_slots=N` as a whole token with a whole number; returns the number or a message. */
function parseCount(token: string, key: "slots" | "max_slots"): number | string {
    const match = /^([A-Za-z_]+)=(.*)$/.exec(token);
    if (match === null) {
        return token.toLowerCase() === key
            ? `write ${key}=N without spaces around '='`
            : `expected ${key}=N, got '${token}'`;
    }
    if (match[1] !== key) {
        return match[1]!.toLowerCase() === key
            ? `'${match[1]}=' must be lower-case '${key}='`
            : `expected ${key}=N, got '${token}'`;
    }
    const value = match[2]!;
    if (!/^\d+$/.test(value)) return `${key}=${value} is not a whole number ≥ 0`;
    const count = Number(value);
    if (count > kMaxSlotsPerHost) return `${key}=${value} is more than ${kMaxSlotsPerHost}`;
    return count;
}

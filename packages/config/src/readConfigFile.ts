import {readFileSync} from "node:fs";
import {ErrorCodes, InputError} from "@mixz/protocol";
import type {ConfigContext, ConfigResult} from "./api.js";
import {resolveConfigText} from "./resolveConfig.js";

/**
 * Reads, validates and resolves a DeepSpeed JSON config file. Problems name `context.file`, or
 * `path` when no file name is given. Throws InputError: code fileRead (with the operating
 * system's reason) when the file cannot be read, configSyntax when it is not UTF-8 text, and the
 * codes of resolveConfigText otherwise.
 */
export function readConfigFile(path: string, context: ConfigContext = {}): ConfigResult {
    const file = context.file ?? path;
    let bytes: Buffer;
    try {
        bytes = readFileSync(path);
    } catch (error) {
        throw new InputError([{code: ErrorCodes.fileRead, file, message: `cannot read the config file: ${describeFsError(error)}`}]);
    }
    let text: string;
    try {
        // ignoreBOM keeps a byte order mark in the text; the JSON parser skips it.
        text = new TextDecoder("utf-8", {fatal: true, ignoreBOM: true}).decode(bytes);
    } catch {
        const line = lineOfFirstInvalidByte(bytes);
        throw new InputError([{code: ErrorCodes.configSyntax, file, line, message: "the file is not valid UTF-8 text"}]);
    }
    return resolveConfigText(text, {...context, file});
}

const fsReasons: Readonly<Record<string, string>> = {
    ENOENT: "no such file or directory",
    EISDIR: "it is a directory",
    EACCES: "permission denied",
    EPERM: "operation not permitted",
    ENOTDIR: "a component of the path is not a directory",
    ELOOP: "too many symbolic links",
    ENAMETOOLONG: "the file name is too long",
    EMFILE: "too many open files"
};

function describeFsError(error: unknown): string {
    const code = (error as {code?: unknown} | null)?.code;
    if (typeof code === "string") return `${fsReasons[code] ?? (error as Error).message} (${code})`;
    return error instanceof Error ? error.message : String(error);
}

/** The 1-based line of the first byte that does not decode as UTF-8. */
function lineOfFirstInvalidByte(bytes: Buffer): number {
    // Bisect for the longest prefix without an invalid byte; streaming mode lets a prefix end
    // inside a character, so "prefix is fine" only gets false once, at the first invalid byte.
    const fine = (length: number): boolean => {
        try {
            new TextDecoder("utf-8", {fatal: true}).decode(bytes.subarray(0, length), {stream: true});
            return true;
        } catch {
            return false;
        }
    };
    let low = 0;
    let high = bytes.length;
    while (low < high) {
        const mid = Math.ceil((low + high) / 2);
        if (fine(mid)) low = mid;
        else high = mid - 1;
    }
    let line = 1;
    for (let i = 0; i < low; i++) if (bytes[i] === 0x0a) line++;
    return line;
}

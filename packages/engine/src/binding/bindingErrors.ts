import {ErrorCodes, MixzError} from "@mixz/protocol";

export const rebuildHint = "rebuild it with `npm run build:native`";

/** The addon file does not exist: mixz is installed but not built. */
export function nativeMissingError(path: string): MixzError {
    return new MixzError(
        ErrorCodes.nativeMissing,
        `native addon not found at ${path}: build it with \`npm run build:native\` (or \`bash scripts/bootstrap\`)`,
        {category: "platform", context: {path}}
    );
}

/**
 * The addon exists but is unusable: not a shared object, built for another Node ABI, missing a
 * library, lacking an export, or crashing. `reason` is one line; details go to `context`.
 */
export function nativeLoadError(
    path: string,
    reason: string,
    options: {
        readonly cause?: unknown;
        readonly context?: Readonly<Record<string, unknown>>;
        /** What to do about it, when "rebuild it" is not the whole answer. */
        readonly hint?: string;
    } = {}
): MixzError {
    const hint = options.hint ?? rebuildHint;
    return new MixzError(ErrorCodes.nativeLoad, `cannot load native addon ${path}: ${reason}; ${hint}`, {
        category: "platform",
        context: {path, ...options.context},
        ...(options.cause === undefined ? {} : {cause: options.cause})
    });
}

/** The first line of an error's message: dlopen errors can be long, the headline is enough. */
export function firstLine(error: unknown): string {
    const message = error instanceof Error ? error.message : String(error);
    const line = message.split("\n", 1)[0]?.trim() ?? "";
    return line === "" ? "unknown error" : line;
}

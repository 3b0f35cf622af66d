/**
 * The one way a native failure reaches TypeScript. The addon throws (bad descriptor) or rejects
 * (the work failed) plain Errors carrying a stable `code` (native/addon/convertError.cc); every
 * call into the binding goes through callNative/callNativeSync, which turn them into MixzErrors
 * with that code, a category, and the stack of the caller's call site (the addon's own stack is
 * one meaningless frame; a rejection from libuv's pool has none at all).
 */
import {MixzError} from "@mixz/protocol";
import type {ErrorCategory} from "@mixz/protocol";

import {NativeErrorCodes} from "./AddonTypes.js";

/** io: a transport or file failed (infra); invalid argument: a caller's bad input (worker); else a bug (platform). */
export function nativeErrorCategory(code: string): ErrorCategory {
    if (code === NativeErrorCodes.io) return "infra";
    if (code === NativeErrorCodes.invalidArgument) return "worker";
    return "platform";
}

/** Where the caller entered the API: its stack is the one the error carries. Call it first thing. */
export function callSite(): Error {
    const site = new Error("call site");
    Error.captureStackTrace?.(site, callSite);
    return site;
}

/** The MixzError for a native error (any other value is returned as it is). */
export function fromNative(error: unknown, site: Error): unknown {
    const code = (error as {code?: unknown} | null)?.code;
    if (!(error instanceof Error) || error instanceof MixzError || typeof code !== "string" || !code.startsWith("MIXZ_ERR_")) return error;
    const converted = new MixzError(code, error.message, {category: nativeErrorCategory(code), cause: error});
    const frames = site.stack?.split("\n").slice(1).join("\n");
    if (frames !== undefined && frames !== "") converted.stack = `${converted.name}: ${converted.message}\n${frames}`;
    return converted;
}

/** Runs an asynchronous native call (or a body of several); native failures become MixzErrors. */
export async function callNative<T>(site: Error, work: () => Promise<T>): Promise<T> {
    try {
        return await work();
    } catch (error) {
        throw fromNative(error, site);
    }
}

/** The same for a synchronous native call. */
export function callNativeSync<T>(site: Error, work: () => T): T {
    try {
        return work();
    } catch (error) {
        throw fromNative(error, site);
    }
}

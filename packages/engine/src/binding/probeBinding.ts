import {spawn} from "node:child_process";
import {existsSync} from "node:fs";
import type {Readable} from "node:stream";

import {ErrorCodes, MixzError} from "@mixz/protocol";

import {bindingExportTypes} from "./AddonTypes.js";
import type {NativeBuildInfo} from "./AddonTypes.js";
import type {NativeCudaProbe} from "./AddonCudaTypes.js";
import {firstLine, nativeLoadError, nativeMissingError} from "./bindingErrors.js";
import {resolveBindingPath} from "./resolveBindingPath.js";
import type {BindingLocation} from "./resolveBindingPath.js";

export interface ProbeBindingOptions extends BindingLocation {
    /** How long the probe process may take before it is killed, in milliseconds. Default 20 000. */
    readonly timeoutMs?: number;
}

const defaultTimeoutMs = 20_000;

/** How much of the probe process's stderr is kept for the error: the end is where crashes report. */
const stderrTailBytes = 4096;

// An ASan build (build-native.mjs --asan) cannot be dlopened into a Node that was not started with
// the ASan runtime preloaded; the runtime says so on stderr and exits. Say how to run it instead.
const asanHint =
    "run node with LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0, " +
    "or use a normal build (`npm run build:native`)";

/**
 * The probe process's program (CommonJS, run with `node -e`). It loads the addon, checks its
 * exports, calls version() and cudaProbe() and writes one JSON message to fd 3, a pipe of its own, so that
 * whatever the native code prints on stdout cannot be mistaken for the answer.
 */
const probeScript = `
"use strict";
const {writeSync} = require("node:fs");
const [path, exportTypesJson] = process.argv.slice(1);
const reply = (message) => writeSync(3, JSON.stringify(message));
const describe = (error) => (error instanceof Error ? error.message : String(error));
let binding;
try {
    // process.dlopen is what require does for a .node file, minus module resolution: a broken
    // package.json in the working directory cannot get in the way. Other files (test doubles) are
    // required.
    if (path.endsWith(".node")) {
        const module = {exports: {}};
        process.dlopen(module, path);
        binding = module.exports;
    } else {
        binding = require(path);
    }
} catch (error) {
    reply({kind: "loadFailed", message: describe(error)});
    process.exit(0);
}
const exportTypes = JSON.parse(exportTypesJson);
const missing = Object.keys(exportTypes).filter((name) => typeof (binding && binding[name]) !== exportTypes[name]);
if (missing.length > 0) {
    reply({kind: "missingExports", missing});
    process.exit(0);
}
let info;
try {
    info = binding.version();
} catch (error) {
    reply({kind: "versionFailed", call: "version", message: describe(error), code: error && error.code});
    process.exit(0);
}
try {
    reply({kind: "ok", info, cuda: binding.cudaProbe()});
} catch (error) {
    reply({kind: "versionFailed", call: "cudaProbe", message: describe(error), code: error && error.code});
}
`;

type ProbeReply =
    | {readonly kind: "ok"; readonly info: NativeBuildInfo; readonly cuda: NativeCudaProbe}
    | {readonly kind: "loadFailed"; readonly message: string}
    | {readonly kind: "missingExports"; readonly missing: readonly string[]}
    | {readonly kind: "versionFailed"; readonly call: "version" | "cudaProbe"; readonly message: string; readonly code?: unknown};

/** What the probe process reports: the build (version()) and the CUDA side (cudaProbe()). */
export interface NativeProbe {
    readonly build: NativeBuildInfo;
    readonly cuda: NativeCudaProbe;
}

/**
 * Loads the native addon in a short-lived child process and returns what its version() reports.
 * probeNative below is the same probe with cudaProbe()'s answer too.
 *
 * A broken binary can crash the process that dlopens it (a bad static constructor, an ABI
 * mismatch that corrupts memory, a missing CPU instruction). Probing in a child first, as
 * node-llama-cpp's testBindingBinary does, turns that into an error here instead of a dead rank
 * daemon or CLI. The path is resolved as loadBinding resolves it, so a successful probe vouches
 * for the binary loadBinding will load.
 *
 * Rejects with MixzError MIXZ_ERR_NATIVE_MISSING when the file does not exist, and
 * MIXZ_ERR_NATIVE_LOAD when the child cannot load it, finds an export missing, crashes (the
 * message names the signal), exits abnormally, or does not answer within `timeoutMs`.
 */
export async function probeBinding(options: ProbeBindingOptions = {}): Promise<NativeBuildInfo> {
    return (await probeNative(options)).build;
}

/**
 * probeBinding's child-process probe, returning cudaProbe()'s answer with version()'s (one child
 * for both: `mixz doctor`). Rejects as probeBinding does.
 */
export async function probeNative(options: ProbeBindingOptions = {}): Promise<NativeProbe> {
    const timeoutMs = options.timeoutMs ?? defaultTimeoutMs;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
        throw new RangeError(`probeBinding: timeoutMs must be a positive number of milliseconds, got ${timeoutMs}`);
    }
    const path = resolveBindingPath(options);
    if (!existsSync(path)) throw nativeMissingError(path);

    const outcome = await runProbeProcess(path, timeoutMs);
    const context = {exitCode: outcome.exitCode, signal: outcome.signal, stderr: outcome.stderrTail};
    const reply = outcome.reply;
    if (outcome.timedOut) {
        throw nativeLoadError(path, `the probe process did not answer within ${timeoutMs} ms and was killed`, {
            context
        });
    }
    if (reply === undefined) {
        const how =
            outcome.signal !== null
                ? `the probe process was killed by ${outcome.signal}`
                : `the probe process exited with code ${outcome.exitCode ?? "unknown"} without answering`;
        const lastLine = lastStderrLine(outcome.stderrTail);
        if (sanitizerRuntimeMissing(outcome.stderrTail)) {
            throw nativeLoadError(path, `${how}: it is an AddressSanitizer build and the ASan runtime is not loaded`, {
                context,
                hint: asanHint
            });
        }
        throw nativeLoadError(path, lastLine === "" ? how : `${how} (${lastLine})`, {context});
    }
    switch (reply.kind) {
        case "ok":
            return {build: reply.info, cuda: reply.cuda};
        case "loadFailed":
            throw nativeLoadError(path, firstLine(reply.message), {context});
        case "missingExports":
            throw nativeLoadError(path, `it does not export ${reply.missing.map((name) => `${name}()`).join(", ")}`, {
                context: {...context, missing: reply.missing}
            });
        case "versionFailed":
            throw nativeLoadError(path, `${reply.call}() failed in the probe process: ${reply.message}`, {
                context: {...context, nativeCode: reply.code}
            });
    }
}

interface ProbeOutcome {
    readonly reply: ProbeReply | undefined;
    readonly exitCode: number | null;
    readonly signal: NodeJS.Signals | null;
    readonly timedOut: boolean;
    readonly stderrTail: string;
}

function runProbeProcess(path: string, timeoutMs: number): Promise<ProbeOutcome> {
    return new Promise((resolvePromise, rejectPromise) => {
        // The environment is inherited on purpose: LD_PRELOAD (sanitizer builds), LD_LIBRARY_PATH
        // and OPENBLAS_* must be the ones the real load will see.
        const child = spawn(process.execPath, ["-e", probeScript, path, JSON.stringify(bindingExportTypes)], {
            stdio: ["ignore", "ignore", "pipe", "pipe"]
        });
        let replyText = "";
        let stderrTail = "";
        let timedOut = false;
        const timer = setTimeout(() => {
            timedOut = true;
            child.kill("SIGKILL");
        }, timeoutMs);

        const replyStream = child.stdio[3] as Readable;
        replyStream.setEncoding("utf8");
        replyStream.on("data", (chunk: string) => {
            // The reply is a few kilobytes; anything much larger is not our probe talking.
            if (replyText.length < 1_000_000) replyText += chunk;
        });
        child.stderr?.setEncoding("utf8");
        child.stderr?.on("data", (chunk: string) => {
            stderrTail = (stderrTail + chunk).slice(-stderrTailBytes);
        });

        child.on("error", (error) => {
            clearTimeout(timer);
            rejectPromise(
                new MixzError(ErrorCodes.nativeLoad, `cannot start the probe process for ${path}: ${error.message}`, {
                    category: "platform",
                    context: {path},
                    cause: error
                })
            );
        });
        // "close" rather than "exit": it fires once the pipes are drained, so the reply is complete.
        child.on("close", (exitCode, signal) => {
            clearTimeout(timer);
            resolvePromise({reply: parseReply(replyText), exitCode, signal, timedOut, stderrTail});
        });
    });
}

function parseReply(text: string): ProbeReply | undefined {
    if (text === "") return undefined;
    try {
        const value: unknown = JSON.parse(text);
        if (typeof value === "object" && value !== null && "kind" in value) return value as ProbeReply;
    } catch {
        // A truncated reply (the child died mid-write) counts as no reply; the exit status explains.
    }
    return undefined;
}

function sanitizerRuntimeMissing(stderr: string): boolean {
    return stderr.includes("ASan runtime does not come first");
}

function lastStderrLine(stderr: string): string {
    const lines = stderr.split("\n").map((line) => line.trim()).filter((line) => line !== "");
    return lines.at(-1) ?? "";
}

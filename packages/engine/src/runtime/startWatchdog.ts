import {fstatSync} from "node:fs";

import {MixzError} from "@mixz/protocol";

import {NativeErrorCodes} from "../binding/AddonTypes.js";
import type {NativeProcessGroup, NativeWatchdog, NativeWatchdogOptions} from "../binding/AddonTypes.js";
import {loadBinding} from "../binding/loadBinding.js";

/** What startWatchdog watches; every field is required (0 and -1 say "none" explicitly). */
export interface WatchdogOptions {
    /**
     * Descriptor whose end of file or hang-up means the lifeline is gone: the rank daemon passes 0,
     * its stdin, whose write end the launcher (or the SSH channel it runs over) holds. -1 watches
     * none. Data arriving on it is read and discarded, so nothing else may read it (in particular
     * not `process.stdin`). The watchdog polls its own duplicate, so closing `fd` later is harmless.
     */
    readonly fd: number;
    /**
     * Lease in milliseconds: the process is killed when this long passes without renew(). The
     * daemon renews on every heartbeat acknowledgement from the coordinator. 0 starts without a
     * lease (a later renew(ms) arms one). An integer in [0, maxWatchdogLeaseMs].
     */
    readonly leaseMs: number;
    /** Names the process in the watchdog's stderr line, e.g. "rank 3": 1 to 256 UTF-8 bytes, one line. */
    readonly label: string;
}

/** A running watchdog, from startWatchdog. */
export interface ProcessWatchdog extends Disposable {
    /**
     * Moves the deadline to now + leaseMs (monotonic clock); 0 removes the lease. Throws
     * MIXZ_ERR_INVALID_ARGUMENT outside [0, maxWatchdogLeaseMs]; does nothing after dispose().
     */
    renew(leaseMs: number): void;
    /** Stops and joins the native thread (returns at once: the thread is woken). Idempotent. */
    dispose(): void;
    /** Whether dispose() was called. */
    readonly disposed: boolean;
}

/** This process's process group, from processGroup(). */
export type ProcessGroup = NativeProcessGroup;

/** The longest lease, as for setTimeout: 2^31 - 1 ms (about 24.8 days). */
export const maxWatchdogLeaseMs = 2_147_483_647;

/** The longest label in UTF-8 bytes. */
export const maxWatchdogLabelBytes = 256;

// Running watchdogs stay reachable until disposed: a caller that keeps no reference to a watchdog
// without a lease (it has nothing to renew) must not lose it to the garbage collector, whose
// finalizer would stop the thread.
const running = new Set<NativeWatchdog>();

/**
 * Starts the process lifeline watchdog: a native thread that kills this process when `options.fd`
 * reaches end of file or hangs up, or when `options.leaseMs` pass without renew(), even while the
 * JavaScript thread is blocked (a busy loop, a deadlocked synchronous call). It never calls into
 * JS; it writes one line to stderr,
 *
 *     mixz: rank 3: watchdog: stdin closed: the launcher or its SSH channel is gone; killing process group 1234
 *
 * and sends SIGKILL to the process group when this process leads it (the rank daemon does, so the
 * user's script and everything it spawned go too), else to this process only. No cleanup runs:
 * this is the last line, for when JS could not do the orderly exit itself.
 *
 * The watchdog runs until dispose(), even if the returned object is dropped. Throws MixzError
 * MIXZ_ERR_INVALID_ARGUMENT for options that are not as WatchdogOptions says (fd not an integer
 * ≥ -1 or not open, leaseMs not an integer in [0, maxWatchdogLeaseMs], label empty, too long or
 * not one line).
 */
export function startWatchdog(options: WatchdogOptions): ProcessWatchdog {
    const descriptor = watchdogDescriptor(options);
    const native = new (loadBinding().Watchdog)(descriptor);
    running.add(native);
    let disposed = false;
    const dispose = (): void => {
        if (disposed) return;
        disposed = true;
        running.delete(native);
        native.stop();
    };
    return {
        renew(leaseMs: number): void {
            checkLease(leaseMs, "renew: leaseMs");
            if (!disposed) native.renew(leaseMs);
        },
        dispose,
        [Symbol.dispose]: dispose,
        get disposed(): boolean {
            return disposed;
        }
    };
}

/** This process's process group id and whether this process leads it (getpgrp() === pid). */
export function processGroup(): ProcessGroup {
    return loadBinding().processGroup();
}

function invalid(message: string, context: Readonly<Record<string, unknown>>, cause?: unknown): MixzError {
    return new MixzError(NativeErrorCodes.invalidArgument, `startWatchdog: ${message}`, {
        category: "platform",
        context,
        ...(cause === undefined ? {} : {cause})
    });
}

function describe(value: unknown): string {
    if (typeof value === "number" || typeof value === "bigint" || typeof value === "boolean") return String(value);
    if (typeof value === "string") return JSON.stringify(value);
    return value === null ? "null" : typeof value;
}

function checkLease(value: unknown, what: string): asserts value is number {
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > maxWatchdogLeaseMs) {
        const range = `[0, ${maxWatchdogLeaseMs}]`;
        throw invalid(`${what} must be an integer number of milliseconds in ${range}, got ${describe(value)}`, {
            option: "leaseMs",
            value
        });
    }
}

/** Validates `options` and returns the complete descriptor the addon takes. */
function watchdogDescriptor(options: WatchdogOptions): NativeWatchdogOptions {
    if (typeof options !== "object" || options === null) {
        throw invalid(`options must be an object {fd, leaseMs, label}, got ${describe(options)}`, {value: options});
    }
    const {fd, leaseMs, label} = options as {fd: unknown; leaseMs: unknown; label: unknown};
    if (typeof fd !== "number" || !Number.isInteger(fd) || fd < -1 || fd > 2_147_483_647) {
        throw invalid(`fd must be an integer file descriptor, or -1 for none, got ${describe(fd)}`, {
            option: "fd",
            value: fd
        });
    }
    if (fd >= 0) {
        try {
            fstatSync(fd);
        } catch (error) {
            throw invalid(`fd ${fd} is not an open file descriptor`, {option: "fd", value: fd}, error);
        }
    }
    checkLease(leaseMs, "leaseMs");
    if (typeof label !== "string" || label === "") {
        throw invalid(`label must be a non-empty string, got ${describe(label)}`, {option: "label", value: label});
    }
    const labelBytes = Buffer.byteLength(label, "utf8");
    if (labelBytes > maxWatchdogLabelBytes) {
        throw invalid(`label must be at most ${maxWatchdogLabelBytes} bytes of UTF-8, got ${labelBytes}`, {
            option: "label",
            value: label
        });
    }
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(label)) {
        throw invalid(`label must not contain control characters (it is printed on one line), got ${describe(label)}`, {
            option: "label",
            value: label
        });
    }
    return {fd, leaseMs, label};
}

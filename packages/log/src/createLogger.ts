import {pino, type Logger} from "pino";
import {PinoPretty} from "pino-pretty";

export type {Logger} from "pino";

export type LogFormat = "pretty" | "json";
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

export interface LoggerOptions {
    /** The part of mixz that logs: "launcher", "coordinator", "daemon", "ssh"… */
    readonly component: string;
    /** `pretty` for people (the default), `json` for log collectors (one object per line). */
    readonly format?: LogFormat;
    readonly level?: LogLevel;
    /** Fields on every line: {runId, host, rank}. */
    readonly bindings?: Readonly<Record<string, string | number>>;
    /** Where lines go; stderr by default, so that stdout stays the command's output. */
    readonly fd?: number;
}

/**
 * A pino logger for one component. Writes are synchronous on purpose: launchers and daemons are
 * killed or exit abruptly when jobs fail, and pino's asynchronous destinations can lose the last
 * lines, which are exactly the ones explaining the failure (pino docs/asynchronous.md).
 */
export function createLogger(options: LoggerOptions): Logger {
    const level = options.level ?? (process.env["MIXZ_LOG_LEVEL"] as LogLevel | undefined) ?? "info";
    const fd = options.fd ?? 2;
    const destination = options.format === "json"
        ? pino.destination({fd, sync: true})
        : PinoPretty({
            destination: fd,
            sync: true,
            colorize: false,
            translateTime: "SYS:HH:MM:ss.l",
            ignore: "pid,hostname,component",
            singleLine: true,
            messageFormat: "{component}: {msg}"
        });
    return pino({level, base: {component: options.component, ...options.bindings}}, destination);
}

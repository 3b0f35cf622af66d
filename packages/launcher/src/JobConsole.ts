import {closeSync, mkdirSync, openSync, writeSync} from "node:fs";
import {join} from "node:path";
import type {MetricsMessage} from "@mixz/protocol";

export interface ConsoleSink {
    readonly out: (text: string) => void;
    readonly err: (text: string) => void;
    /** An interactive terminal gets one progress line that updates in place. */
    readonly interactive: boolean;
}

export interface JobConsoleOptions {
    readonly sink: ConsoleSink;
    /** One file per rank in this directory (created), stdout and stderr lines together. */
    readonly logDir?: string;
    /** Only these ranks reach the console (files and failure summaries keep everything). */
    readonly consoleRanks?: ReadonlySet<number>;
    /**
     * Without a terminal, the progress line of every n-th step only (and of step 1): the config's
     * steps_per_print, as DeepSpeed logs. A terminal shows every step in place. Default 1.
     */
    readonly printEvery?: number;
}

/** Steps waiting for some rank's report, at most. */
const kMaxPendingSteps = 64;

/** How many stderr lines of each rank are kept for the failure summary. */
export const kStderrTailLines = 20;

/**
 * The launcher's console: every rank line with its `[host:rank]` prefix, per-rank log files, the
 * stderr tails the failure summary shows, and the progress line built from step metrics.
 */
export class JobConsole {
    private readonly files = new Map<number, number>();
    private readonly tails = new Map<number, string[]>();
    private readonly steps = new Map<number, Map<number, Omit<MetricsMessage, "kind">>>();
    private status = "";
    private lastPrintedStep = -1;
    /** Per rank: its latest step, and how many times its steps started over (a new engine). */
    private readonly lastStepOf = new Map<number, number>();
    private readonly engineOf = new Map<number, number>();
    /** The newest engine any rank reports for; older engines' reports are not shown. */
    private engine = 0;
    /** Ranks that have reported metrics at least once. */
    private readonly reporters = new Set<number>();

    constructor(private readonly options: JobConsoleOptions) {
        if (options.logDir !== undefined) mkdirSync(options.logDir, {recursive: true});
    }

    rankLine(rank: number, host: string, stream: "stdout" | "stderr", line: string): void {
        if (stream === "stderr") {
            const tail = this.tails.get(rank) ?? [];
            tail.push(line);
            if (tail.length > kStderrTailLines) tail.shift();
            this.tails.set(rank, tail);
        }
        if (this.options.logDir !== undefined) {
            let fd = this.files.get(rank);
            if (fd === undefined) {
                // A new job starts its files afresh: mixing two runs in one file misleads.
                fd = openSync(join(this.options.logDir, `rank-${rank}.log`), "w");
                this.files.set(rank, fd);
            }
            writeSync(fd, `${line}\n`);
        }
        if (this.options.consoleRanks !== undefined && !this.options.consoleRanks.has(rank)) return;
        this.print(stream, `[${host}:${rank}] ${line}\n`);
    }

    /** A message of the launcher itself. */
    note(text: string, stream: "stdout" | "stderr" = "stderr"): void {
        this.print(stream, text.endsWith("\n") ? text : `${text}\n`);
    }

    stderrTail(rank: number): readonly string[] {
        return this.tails.get(rank) ?? [];
    }

    /**
     * Step metrics of one rank. Once every rank that reports metrics at all has reported a step
     * (all ranks, or only rank 0 in scripts where only rank 0 reports), one progress entry is
     * shown: mean loss, summed tokens/s, the slowest rank (the one every other rank waits for), and the
     * bytes all ranks received from their own node and from other nodes.
     */
    metrics(rank: number, metrics: Omit<MetricsMessage, "kind">): void {
        this.reporters.add(rank);
        // One rank's steps only grow within one engine (its reports arrive in order); a smaller one
        // means the script built a new engine (e.g. pretraining, then LoRA on the exported model),
        // whose steps count from 1 again: the progress line follows the newest engine.
        const previous = this.lastStepOf.get(rank);
        let engine = this.engineOf.get(rank) ?? 0;
        if (previous !== undefined && metrics.step < previous) this.engineOf.set(rank, ++engine);
        this.lastStepOf.set(rank, metrics.step);
        if (engine < this.engine) return;
        if (engine > this.engine) {
            this.engine = engine;
            this.steps.clear();
            this.lastPrintedStep = -1;
        }
        if (metrics.step <= this.lastPrintedStep) return;
        const byRank = this.steps.get(metrics.step) ?? new Map<number, Omit<MetricsMessage, "kind">>();
        byRank.set(rank, metrics);
        this.steps.set(metrics.step, byRank);
        // Bounded memory: steps some reporter never completes are dropped, oldest first.
        while (this.steps.size > kMaxPendingSteps) this.steps.delete(this.steps.keys().next().value!);
        if (![...this.reporters].every((r) => byRank.has(r))) return;
        for (const step of this.steps.keys()) if (step <= metrics.step) this.steps.delete(step);
        this.lastPrintedStep = metrics.step;
        const reports = [...byRank.entries()];
        const losses = reports.map(([, m]) => m.loss).filter((loss): loss is number => loss !== undefined);
        const tokens = reports.map(([, m]) => m.tokensPerSec ?? 0).reduce((a, b) => a + b, 0);
        let slowest: [number, number] | undefined;
        for (const [r, m] of reports) if (m.stepTimeMs !== undefined && (slowest === undefined || m.stepTimeMs > slowest[1])) slowest = [r, m.stepTimeMs];
        const parts = [`step ${metrics.step}`];
        if (losses.length > 0) parts.push(`loss ${(losses.reduce((a, b) => a + b, 0) / losses.length).toFixed(4)}`);
        if (tokens > 0) parts.push(`${tokens.toFixed(0)} tokens/s`);
        if (slowest !== undefined) parts.push(`slowest rank ${slowest[0]} (${slowest[1].toFixed(0)} ms)`);
        const intra = reports.map(([, m]) => m.intraNodeBytes).filter((b): b is number => b !== undefined);
        const cross = reports.map(([, m]) => m.crossNodeBytes).filter((b): b is number => b !== undefined);
        if (intra.length > 0 || cross.length > 0) {
            const mb = (values: number[]): string => (values.reduce((a, b) => a + b, 0) / 1e6).toFixed(1);
            parts.push(`received ${mb(intra)} MB intra-node, ${mb(cross)} MB cross-node`);
        }
        const text = `[mixz] ${parts.join(" | ")}`;
        const every = this.options.printEvery ?? 1;
        if (!this.options.sink.interactive && every > 1 && metrics.step !== 1 && metrics.step % every !== 0) return;
        if (this.options.sink.interactive) {
            this.status = text;
            this.options.sink.out(`\r\x1b[K${text}`);
        } else {
            this.options.sink.out(`${text}\n`);
        }
    }

    /** Ends the progress line and closes the log files. */
    close(): void {
        if (this.status !== "") this.options.sink.out("\n");
        this.status = "";
        for (const fd of this.files.values()) closeSync(fd);
        this.files.clear();
    }

    private print(stream: "stdout" | "stderr", text: string): void {
        const write = stream === "stdout" ? this.options.sink.out : this.options.sink.err;
        if (this.status === "") {
            write(text);
            return;
        }
        // Keep the progress line last: clear it, print, draw it again.
        this.options.sink.out("\r\x1b[K");
        write(text);
        this.options.sink.out(this.status);
    }
}

import {randomBytes, randomUUID} from "node:crypto";
import {readdirSync, unlinkSync} from "node:fs";
import {constants} from "node:os";
import {fileURLToPath} from "node:url";
import {Coordinator, type CoordinatorEvent} from "@mixz/coordinator";
import type {Logger} from "@mixz/log";
import type {PlanNode, WorldPlan} from "@mixz/plan";
import {ErrorCodes, MixzError, PROTOCOL_VERSION, type RankDescriptor} from "@mixz/protocol";
import {exitCodeOf, formatFailureReport, rootCauseOf, type RankFailure} from "./FailureReport.js";
import {JobConsole, type ConsoleSink} from "./JobConsole.js";
import {splitLines} from "./LineSplitter.js";
import {startLocalRank, type RankExit, type RankProcess} from "./RankProcess.js";
import {forwardedEnvironment} from "./readEnvFiles.js";
import {probeHosts} from "./ssh/probeHosts.js";
import {resolveSshTarget} from "./ssh/resolveSshTarget.js";
import {SshConnection} from "./ssh/SshConnection.js";
import {startRemoteRank} from "./startRemoteRank.js";

export interface JobOptions {
    readonly plan: WorldPlan;
    /** Absolute path of the training script, and its arguments. */
    readonly script: string;
    readonly args: readonly string[];
    readonly cwd: string;
    /** The validated config, handed to every rank; null without --config. */
    readonly config: unknown;
    readonly mixzVersion: string;
    /** Variables of .mixz_env / .deepspeed_env files. */
    readonly envFiles: Readonly<Record<string, string>>;
    readonly joinTimeoutMs: number;
    readonly heartbeatIntervalMs: number;
    readonly heartbeatMisses: number;
    /** Between SIGTERM and SIGKILL when ranks are stopped. */
    readonly gracePeriodMs: number;
    readonly logDir?: string;
    readonly consoleRanks?: ReadonlySet<number>;
    readonly logFormat: "pretty" | "json";
    readonly ssh: {readonly port?: number; readonly acceptNewHostKeys: boolean; readonly configPath?: string};
    readonly sink: ConsoleSink;
    readonly logger: Logger;
    /** Install SIGINT/SIGTERM/SIGHUP handlers (the CLI does; tests driving runJob in-process may not). */
    readonly handleSignals: boolean;
}

/** Where a rank stands, as the launcher sees it. */
type RankPhase = "starting" | "running" | "exited";

interface RankState {
    readonly rank: number;
    readonly node: PlanNode;
    readonly localRank: number;
    phase: RankPhase;
    process?: RankProcess;
    pid: number | null;
    exit?: RankExit;
    output?: Promise<void>;
    error?: string;
    said: boolean;
}

/**
 * The job's state machine: STARTING (coordinator up, hosts probed, ranks spawned) → RUNNING →
 * DONE when every rank has exited; on the first failure, Ctrl-C or a lost rank → STOPPING (abort
 * broadcast, SIGTERM, grace, SIGKILL, by process group or SSH channel) → DONE. Whether DONE is a
 * success is decided from the recorded failures and the interrupting signal (verdict()).
 */
type JobPhase = "starting" | "running" | "stopping" | "done";

/**
 * Exec channels per SSH connection: OpenSSH's default MaxSessions is 10, and each rank holds one
 * channel (plus one briefly to reap its process group), so 8 leaves room.
 */
const kSessionsPerConnection = 8;
/** How long the launcher waits for a disconnected rank's process to report its exit. */
const kDisconnectGraceMs = 5000;
/** After SIGKILL, how long stopped ranks get to report their exit before the launcher gives up on them. */
const kKillWaitMs = 5000;

/** The rank daemon's entry (the built file: daemons run plain node, never a TypeScript loader). */
const daemonMain = fileURLToPath(import.meta.resolve("@mixz/daemon/main"));

/** Runs a job to the end and returns the launcher's exit code (DESIGN.md §4). */
export async function runJob(options: JobOptions): Promise<number> {
    return new Job(options).run();
}

class Job {
    private readonly jobId = randomUUID().slice(0, 8);
    private readonly token = randomBytes(32).toString("hex");
    private readonly ranks: RankState[];
    private readonly console: JobConsole;
    private phase: JobPhase = "starting";
    private readonly failures: RankFailure[] = [];
    private interruptedBy: NodeJS.Signals | null = null;
    private coordinator?: Coordinator;
    /** SSH connections per host: one per kSessionsPerConnection ranks (OpenSSH's MaxSessions default is 10). */
    private readonly connections = new Map<string, SshConnection[]>();
    private stoppedByLauncher = 0;
    /** Ranks the launcher has SIGKILLed (or whose SSH channel it closed): their SIGKILL deaths are its own doing. */
    private readonly killed = new Set<number>();
    /** Ranks the launcher is stopping (SIGTERM sent or channel closed). */
    private readonly stopping = new Set<number>();
    private settle!: () => void;
    private readonly finished = new Promise<void>((resolve) => {
        this.settle = resolve;
    });
    private readonly timers = new Set<NodeJS.Timeout>();
    private signalInterrupt!: (value: "interrupted") => void;
    /** Resolves on the first SIGINT/SIGTERM/SIGHUP, so that waits that cannot be cancelled can be abandoned. */
    private readonly interrupted = new Promise<"interrupted">((resolve) => {
        this.signalInterrupt = resolve;
    });
    /** Kills of what exited ranks left in their process groups; awaited before SSH connections close. */
    private readonly reapers: Array<Promise<void>> = [];
    private readonly signalHandlers = new Map<NodeJS.Signals, () => void>();

    constructor(private readonly options: JobOptions) {
        this.ranks = options.plan.nodes.flatMap((node) =>
            node.ranks.map((rank, index) => ({rank, node, localRank: node.local_ranks[index]!, phase: "starting" as RankPhase, pid: null, said: false}))
        );
        this.console = new JobConsole({
            sink: options.sink,
            ...(options.logDir === undefined ? {} : {logDir: options.logDir}),
            ...(options.consoleRanks === undefined ? {} : {consoleRanks: options.consoleRanks}),
            printEvery: stepsPerPrint(options.config)
        });
    }

    async run(): Promise<number> {
        const {plan, logger} = this.options;
        const allLocal = plan.nodes.every((node) => node.spawn === "local");
        try {
            this.coordinator = await Coordinator.start({
                host: allLocal ? "127.0.0.1" : "0.0.0.0",
                port: plan.master_port,
                token: this.token,
                jobId: this.jobId,
                ranks: this.ranks.map((state) => ({rank: state.rank, host: state.node.host})),
                joinTimeoutMs: this.options.joinTimeoutMs,
                heartbeatIntervalMs: this.options.heartbeatIntervalMs,
                heartbeatMisses: this.options.heartbeatMisses,
                logger: logger.child({component: "coordinator"}),
                onEvent: (event) => this.onCoordinatorEvent(event)
            });
        } catch (error) {
            this.console.close();
            throw error;
        }
        this.installSignalHandlers();
        try {
            const sshNodes = plan.nodes.filter((node) => node.spawn === "ssh");
            if (sshNodes.length > 0) {
                const targets = sshNodes.map((node) => resolveSshTarget(node.host, {
                    ...(this.options.ssh.port === undefined ? {} : {sshPort: this.options.ssh.port}),
                    ...(this.options.ssh.configPath === undefined ? {} : {configPath: this.options.ssh.configPath})
                }));
                const connectOptions = {acceptNewHostKeys: this.options.ssh.acceptNewHostKeys, logger: logger.child({component: "ssh"})};
                const probing = probeHosts(targets, connectOptions);
                const probed = await Promise.race([probing, this.interrupted]);
                if (probed === "interrupted") {
                    // Connections that open after Ctrl-C are closed as soon as they do.
                    void probing.then((late) => late.forEach((connection) => connection.close()), () => undefined);
                    await this.cleanUp();
                    return interruptCode(this.interruptedBy!);
                }
                for (const [host, connection] of probed) this.connections.set(host, [connection]);
                // Hosts with more ranks than one connection may carry get more connections.
                await Promise.all(sshNodes.map(async (node, index) => {
                    const needed = Math.ceil(node.ranks.length / kSessionsPerConnection);
                    const list = this.connections.get(node.host)!;
                    while (list.length < needed) list.push(await SshConnection.open(targets[index]!, connectOptions));
                }));
            }
            if (this.phase === "starting") await this.startRanks();
            if (this.phase === "starting") this.phase = "running";
            if (this.ranks.every((state) => state.phase === "exited")) this.finish();
            await this.finished;
        } catch (error) {
            if (!(error instanceof MixzError)) throw error;
            // Could not start (SSH probe, exec): nothing of the job may stay behind.
            this.console.note(`mixz: ${error.message}`);
            await this.stopEverything(error.code, error.message);
            await this.cleanUp();
            return this.interruptedBy === null ? 1 : interruptCode(this.interruptedBy);
        }
        await this.cleanUp();
        return this.verdict();
    }

    private verdict(): number {
        if (this.failures.length > 0) {
            const root = rootCauseOf(this.failures)!;
            this.options.sink.err(formatFailureReport(this.options.script, this.jobId, this.failures, this.stoppedByLauncher));
            return this.interruptedBy === null ? exitCodeOf(root) : interruptCode(this.interruptedBy);
        }
        if (this.interruptedBy !== null) return interruptCode(this.interruptedBy);
        return 0;
    }

    private async startRanks(): Promise<void> {
        const coordinator = this.coordinator!;
        const forwarded = {...forwardedEnvironment(process.env), ...this.options.envFiles};
        const daemonArgv = [process.execPath, "--enable-source-maps", daemonMain];
        for (const state of this.ranks) {
            if (this.phase !== "starting") return;
            const descriptor: RankDescriptor = {
                protocol: PROTOCOL_VERSION,
                mixzVersion: this.options.mixzVersion,
                jobId: this.jobId,
                token: this.token,
                coordinatorUrl: `ws://${this.coordinatorHostFor(state.node)}:${coordinator.port}/`,
                rank: state.rank,
                localRank: state.localRank,
                worldSize: this.options.plan.world_size,
                localWorldSize: state.node.ranks.length,
                crossRank: state.node.node_rank,
                crossSize: this.options.plan.nodes.length,
                host: state.node.host,
                slot: state.node.slots[state.localRank]!,
                nodeSlots: state.node.slots,
                masterAddr: this.options.plan.master_addr,
                masterPort: coordinator.port,
                script: this.options.script,
                args: this.options.args,
                cwd: this.options.cwd,
                env: state.node.spawn === "local" ? {...this.options.envFiles} : forwarded,
                config: this.options.config,
                joinTimeoutMs: this.options.joinTimeoutMs,
                heartbeatIntervalMs: this.options.heartbeatIntervalMs,
                heartbeatMisses: this.options.heartbeatMisses,
                logFormat: this.options.logFormat
            };
            const line = JSON.stringify(descriptor);
            let started: RankProcess;
            if (state.node.spawn === "local") {
                started = startLocalRank(daemonArgv, line, this.options.cwd, {...process.env, ...this.options.envFiles});
            } else {
                const connection = this.connections.get(state.node.host)![Math.floor(state.localRank / kSessionsPerConnection)]!;
                started = await startRemoteRank(connection, daemonArgv, line, this.options.cwd);
            }
            this.attach(state, started);
        }
    }

    /** Local ranks reach a loopback coordinator directly; remote ranks use the plan's master address. */
    private coordinatorHostFor(node: PlanNode): string {
        return node.spawn === "local" && this.options.plan.nodes.every((n) => n.spawn === "local") ? "127.0.0.1" : this.options.plan.master_addr;
    }

    private attach(state: RankState, started: RankProcess): void {
        state.process = started;
        state.pid = started.pid;
        state.phase = "running";
        const host = state.node.host;
        state.output = Promise.all([
            splitLines(started.stdout, (line) => this.console.rankLine(state.rank, host, "stdout", line)),
            splitLines(started.stderr, (line) => this.console.rankLine(state.rank, host, "stderr", line))
        ]).then(() => undefined);
        void started.exit.then((exit) => this.onRankExit(state, exit));
    }

    private onRankExit(state: RankState, exit: RankExit): void {
        state.exit = exit;
        state.phase = "exited";
        if (state.process !== undefined) this.reapers.push(state.process.reapGroup(state.pid));
        const clean = exit.code === 0 && exit.signal === null;
        const failure: RankFailure = {kind: "exit", ...this.identity(state), time: new Date(), code: exit.code, signal: exit.signal, ...(state.error === undefined ? {} : {error: state.error})};
        if (!clean && (this.phase === "starting" || this.phase === "running")) {
            this.fail(failure);
        } else if (!clean && this.phase === "stopping" && !stoppedByUs(exit, this.killedByUs(state)) && !this.interruptedBy) {
            // Failed on its own while the job was being stopped (two ranks failing at once): not a
            // consequence of the launcher's SIGTERM/SIGKILL or of the daemon's abort handling.
            this.failures.push(failure);
            if (this.stopping.has(state.rank)) this.stoppedByLauncher--;
        }
        if (this.ranks.every((s) => s.phase === "exited") && this.phase !== "starting") this.finish();
    }

    private onCoordinatorEvent(event: CoordinatorEvent): void {
        const state = "rank" in event ? this.ranks[event.rank] : undefined;
        switch (event.type) {
            case "joined":
                if (state !== undefined && state.pid === null) state.pid = event.pid;
                break;
            case "ready":
                this.options.logger.debug({worldSize: this.options.plan.world_size}, "every rank joined");
                break;
            case "join_timeout": {
                const first = this.ranks[event.missing[0]!.rank]!;
                const list = event.missing.map((m) => `${m.rank} (${m.host})`).join(", ");
                this.fail({
                    kind: "join_timeout",
                    ...this.identity(first),
                    time: new Date(),
                    code: null,
                    signal: null,
                    detail: `ranks that never joined within ${this.options.joinTimeoutMs / 1000} s: ${list}`
                });
                break;
            }
            case "lost":
                if (state === undefined || state.said || state.phase === "exited") break;
                if (event.reason === "heartbeat") {
                    const seconds = (this.options.heartbeatIntervalMs * this.options.heartbeatMisses / 1000).toFixed(1);
                    this.fail({kind: "heartbeat", ...this.identity(state), time: new Date(), code: null, signal: null, detail: `no heartbeat for ${seconds} s: the rank is stuck or unreachable`});
                } else {
                    // Usually the process is exiting right now; its exit status tells more.
                    this.later(kDisconnectGraceMs, () => {
                        if (state.phase !== "exited") {
                            this.fail({kind: "disconnected", ...this.identity(state), time: new Date(), code: null, signal: null, detail: "its coordinator connection closed but the process did not exit"});
                        }
                    });
                }
                break;
            case "bye":
                if (state !== undefined) state.said = true;
                break;
            case "failure":
                if (state !== undefined) state.error = event.message;
                break;
            case "metrics":
                this.console.metrics(event.rank, event.metrics);
                break;
            case "rejected":
                this.options.logger.warn({remote: event.remote, code: event.code}, `rejected a coordinator connection: ${event.message}`);
                break;
        }
    }

    private identity(state: RankState): Pick<RankFailure, "rank" | "host" | "localRank" | "pid" | "stderrTail"> {
        return {rank: state.rank, host: state.node.host, localRank: state.localRank, pid: state.pid, stderrTail: this.console.stderrTail(state.rank)};
    }

    private fail(failure: RankFailure): void {
        if (this.phase === "stopping" || this.phase === "done") return;
        this.failures.push(failure);
        void this.stopEverything(ErrorCodes.rankFailed, `rank ${failure.rank} on ${failure.host} failed`).then(() => this.finish());
    }

    /** STOPPING: abort broadcast, SIGTERM (or channel EOF), grace, SIGKILL; resolves when every rank has exited or been given up on. */
    private async stopEverything(code: string, reason: string): Promise<void> {
        if (this.phase === "stopping" || this.phase === "done") return;
        this.phase = "stopping";
        if (this.ranks.some((state) => state.process !== undefined)) this.coordinator?.abort(code, reason);
        const running = this.ranks.filter((state) => state.phase !== "exited" && state.process !== undefined);
        this.stoppedByLauncher = running.length;
        for (const state of running) this.stopping.add(state.rank);
        // A rank lost to its heartbeat is stuck or stopped: it would only sit out the grace period.
        const lost = new Set(this.failures.filter((f) => f.kind === "heartbeat").map((f) => f.rank));
        for (const state of running) {
            if (lost.has(state.rank)) this.kill(state);
            else state.process!.terminate();
        }
        const allExited = Promise.all(running.map((state) => state.process!.exit));
        if (await this.within(allExited, this.options.gracePeriodMs)) return;
        for (const state of running) if (state.phase !== "exited") this.kill(state);
        await this.within(allExited, kKillWaitMs);
    }

    /** Whether a SIGKILL death of this rank is the launcher's doing: it sent the SIGKILL, or it closed a remote rank's stdin, on which the daemon's watchdog SIGKILLs its group. */
    private killedByUs(state: RankState): boolean {
        return this.killed.has(state.rank) || (state.node.spawn === "ssh" && this.stopping.has(state.rank));
    }

    private kill(state: RankState): void {
        this.killed.add(state.rank);
        state.process?.kill();
    }

    private finish(): void {
        if (this.phase === "done") return;
        this.phase = "done";
        this.settle();
    }

    private async cleanUp(): Promise<void> {
        for (const timer of this.timers) clearTimeout(timer);
        this.timers.clear();
        for (const [signal, handler] of this.signalHandlers) process.off(signal, handler);
        // Output of exited ranks: let the last lines arrive (they explain failures), but never hang on a stream.
        await this.within(Promise.all(this.ranks.map((state) => state.output ?? Promise.resolve())), 2000);
        await this.within(Promise.all(this.reapers), 5000);
        await this.within(this.sweepSharedMemory(), 5000);
        await this.coordinator?.close();
        for (const list of this.connections.values()) for (const connection of list) connection.close();
        this.console.close();
        // Stderr tails of failures were captured when they were detected; refresh them now that all output is in.
        for (let i = 0; i < this.failures.length; i++) {
            const failure = this.failures[i]!;
            this.failures[i] = {...failure, stderrTail: this.console.stderrTail(failure.rank)};
        }
    }

    /**
     * Removes this job's shared-memory segments (/dev/shm/mixz-<jobId>-*) on every host. The
     * communicator unlinks a segment once every rank has mapped it, but a rank that dies between
     * creating and sharing one (e.g. its peers fail before they connect) leaves the name behind;
     * only the job id makes a name this job's, so other jobs' segments are never touched.
     */
    private async sweepSharedMemory(): Promise<void> {
        const prefix = `mixz-${this.jobId}-`;
        if (this.options.plan.nodes.some((node) => node.spawn === "local")) {
            let names: string[] = [];
            try {
                names = readdirSync("/dev/shm");
            } catch {
                // No /dev/shm here: nothing to sweep.
            }
            for (const name of names) {
                if (!name.startsWith(prefix)) continue;
                try {
                    unlinkSync(`/dev/shm/${name}`);
                } catch {
                    // Gone meanwhile.
                }
            }
        }
        await Promise.all([...this.connections.values()].map(async ([connection]) => {
            if (connection === undefined) return;
            try {
                // The job id is 8 hex digits: safe inside the glob.
                const sweeper = await connection.exec(["sh", "-c", `rm -f /dev/shm/${prefix}*`], {cwd: "/", env: {}});
                sweeper.stdout.resume();
                sweeper.stderr.resume();
                await sweeper.exit;
            } catch {
                // The host is unreachable: nothing more the launcher can do there.
            }
        }));
    }

    private installSignalHandlers(): void {
        if (!this.options.handleSignals) return;
        for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
            const handler = (): void => {
                if (this.interruptedBy !== null) {
                    // A second Ctrl-C: stop waiting for the grace period.
                    for (const state of this.ranks) if (state.phase !== "exited") this.kill(state);
                    return;
                }
                this.interruptedBy = signal;
                this.signalInterrupt("interrupted");
                this.console.note(`mixz: ${signal} received: stopping ${this.ranks.filter((s) => s.phase !== "exited").length} rank(s) (again to kill them now)`);
                void this.stopEverything(ErrorCodes.aborted, `the launcher received ${signal}`).then(() => this.finish());
            };
            this.signalHandlers.set(signal, handler);
            process.on(signal, handler);
        }
    }

    private later(ms: number, action: () => void): void {
        const timer = setTimeout(() => {
            this.timers.delete(timer);
            action();
        }, ms);
        this.timers.add(timer);
    }

    /** Whether `promise` settles within `ms`. */
    private within(promise: Promise<unknown>, ms: number): Promise<boolean> {
        return new Promise((resolve) => {
            const timer = setTimeout(() => resolve(false), ms);
            void promise.then(() => {
                clearTimeout(timer);
                resolve(true);
            });
        });
    }
}

/** 128 + n for signal n (130 after Ctrl-C), as a shell reports it. */
function interruptCode(signal: NodeJS.Signals): number {
    return 128 + signalNumber(signal);
}

function signalNumber(signal: string): number {
    return (constants.signals as Record<string, number>)[signal] ?? 0;
}

/**
 * Exits that the teardown itself causes: SIGTERM to the group or the daemon ending itself on
 * abort (128+SIGTERM); SIGKILL (or 128+SIGKILL) only when the launcher sent it to this rank — a
 * SIGKILL from elsewhere during the teardown is a failure of its own (e.g. the kill that started it).
 */
function stoppedByUs(exit: RankExit, killedByUs: boolean): boolean {
    if (exit.signal === "SIGTERM" || (exit.signal === "SIGKILL" && killedByUs)) return true;
    return exit.code === 128 + signalNumber("SIGTERM") || (exit.code === 128 + signalNumber("SIGKILL") && killedByUs);
}

/** The config's steps_per_print (DeepSpeed's logging interval), 1 without a config. */
function stepsPerPrint(config: unknown): number {
    const value = (config as {steps_per_print?: unknown} | null)?.steps_per_print;
    return typeof value === "number" && Number.isInteger(value) && value >= 1 ? value : 1;
}

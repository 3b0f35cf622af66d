import {resolveConfigObject, type ResolvedConfig} from "@mixz/config";
import {Communicator, engineDefaults, storeExchange, ZeroEngine, type LlamaModel, type StepMetrics} from "@mixz/engine";
import {ErrorCodes, InputError} from "@mixz/protocol";
import {runtime} from "./runtime.js";
import {attachEngine} from "./modelEngines.js";

export interface InitializeOptions {
    readonly model: LlamaModel;
    /**
     * The validated config (`runtime.config` under `mixz launch --config`), or a DeepSpeed config
     * object, validated here against this world.
     */
    readonly config: ResolvedConfig | Record<string, unknown> | null;
    /** Bounds rendezvous and every collective; default engineDefaults.timeoutMs (120 s). */
    readonly timeoutMs?: number;
}

let engines = 0;

/**
 * Builds the ZeRO-3 engine of this rank: connects the world (shared memory within a host, Gloo
 * between hosts) through the job's store, partitions the model, and reports each optimizer step's
 * metrics to the launcher's progress line. A collective: every rank calls it, in the same order as
 * its other initialize() calls.
 */
export async function initialize(options: InitializeOptions): Promise<ZeroEngine> {
    const ctx = runtime;
    const config = resolved(options.config, ctx.worldSize);
    const timeoutMs = options.timeoutMs ?? engineDefaults.timeoutMs;
    const first = ctx.rank - ctx.localRank;
    const localRanks = Array.from({length: ctx.localWorldSize}, (_, i) => first + i);
    const serial = engines++;
    const prefix = `mixz/engine/${serial}`;
    const communicator = await Communicator.create(
        {rank: ctx.rank, worldSize: ctx.worldSize, host: ctx.host, jobId: `${ctx.jobId}-e${serial}`, localRanks, timeoutMs},
        storeExchange(ctx.store, {prefix, rank: ctx.rank, worldSize: ctx.worldSize, timeoutMs})
    );
    try {
        // The engine decides and builds its ZeRO++ groups (hpZ, qgZ) from the config and the world.
        const engine = await ZeroEngine.create({
            model: options.model,
            config,
            communicator,
            kernelThreads: kernelThreads(),
            localRank: ctx.localRank,
            timeoutMs,
            onStep: (m: StepMetrics) => {
                const t = m.traffic;
                ctx.reportMetrics({
                    step: m.step, loss: m.loss, tokensPerSec: m.tokensPerSec, stepTimeMs: m.stepTimeMs, gatherMs: m.gatherMs, computeMs: m.computeMs, reduceMs: m.reduceMs,
                    intraNodeBytes: t.frozenGatherIntra + t.trainableGatherIntra + t.reduceIntra,
                    crossNodeBytes: t.frozenGatherCross + t.trainableGatherCross + t.reduceCross
                });
            }
        });
        attachEngine(options.model, engine);
        return engine;
    } catch (error) {
        // ZeroEngine.create released what it built; the original error is what the user needs to see.
        await communicator.dispose().catch(() => undefined);
        throw error;
    }
}

function resolved(config: InitializeOptions["config"], worldSize: number): ResolvedConfig {
    if (config === null || config === undefined) {
        throw new InputError([{code: ErrorCodes.configInvalidValue, path: "initialize: config", message: "no config: launch with --config FILE (runtime.config) or pass a DeepSpeed config object"}]);
    }
    if (isResolved(config)) return config;
    const result = resolveConfigObject(config, {worldSize});
    return result.config;
}

function isResolved(config: ResolvedConfig | Record<string, unknown>): config is ResolvedConfig {
    const zero = (config as {zero_optimization?: unknown}).zero_optimization;
    return typeof zero === "object" && zero !== null && "stage3_prefetch_bucket_size" in zero && "mixz" in config;
}

/** The rank's share of the host's cores, as the daemon set OMP_NUM_THREADS (1 when unset). */
function kernelThreads(): number {
    const value = Number(process.env["OMP_NUM_THREADS"]);
    return Number.isInteger(value) && value >= 1 ? Math.min(value, 1024) : 1;
}

import {resolveConfigObject, type ResolvedConfig} from "@mixz/config";
import {Communicator, storeExchange, ZeroEngine, type LlamaModel, type StepMetrics} from "@mixz/engine";
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
    /** Bounds rendezvous and every collective; default 120 s. */
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
    const timeoutMs = options.timeoutMs ?? 120_000;
    const first = ctx.rank - ctx.localRank;
    const localRanks = Array.from({length: ctx.localWorldSize}, (_, i) => first + i);
    const serial = engines++;
    const prefix = `mixz/engine/${serial}`;
    const communicator = await Communicator.create(
        {rank: ctx.rank, worldSize: ctx.worldSize, host: ctx.host, jobId: `${ctx.jobId}-e${serial}`, localRanks, timeoutMs},
        storeExchange(ctx.store, {prefix, rank: ctx.rank, worldSize: ctx.worldSize, timeoutMs})
    );
    let hpz: Communicator | null = null;
    let node: Communicator | null = null;
    let cross: Communicator | null = null;
    try {
        // hpZ: secondary partitions over consecutive blocks of h ranks, each on one node (the
        // config check made sure h divides the world and every node). h = world holds nothing a
        // primary partition does not, so it is skipped like h = 1.
        const h = config.zero_optimization.zero_hpz_partition_size;
        if (h > 1 && h < ctx.worldSize) hpz = await communicator.group("hpz", h, {tag: 7200, timeoutMs});
        // qgZ reduces inside the node first, then across nodes: it needs uniform nodes (every rank
        // calls group() alike, so the condition must be the same on every rank: world = L × nodes).
        const perNode = ctx.localWorldSize;
        if (config.zero_optimization.zero_quantized_gradients && ctx.crossSize > 1 && !(await uniformNodes(communicator, perNode))) {
            if (ctx.rank === 0) ctx.logger.warn("zero_quantized_gradients needs the same number of ranks on every node; gradients use the plain reduce-scatter");
        } else if (config.zero_optimization.zero_quantized_gradients && ctx.crossSize > 1) {
            node = perNode === h && hpz !== null ? hpz : perNode > 1 ? await communicator.group("hpz", perNode, {tag: 7201, timeoutMs}) : null;
            cross = await communicator.group("cross", {tag: 7202, timeoutMs});
        }
        const engine = await ZeroEngine.create({
            model: options.model,
            config,
            communicator,
            hpz,
            node,
            cross,
            kernelThreads: kernelThreads(),
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
        // Release everything; the original error is what the user needs to see.
        await Promise.allSettled([...new Set([hpz, node, cross, communicator])].map((comm) => comm?.dispose()));
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

/**
 * Whether every node has the same number of ranks, decided from the same all-reduced facts on every
 * rank (a local view would let nodes disagree and call different group() collectives).
 */
async function uniformNodes(world: Communicator, perNode: number): Promise<boolean> {
    const extremes = new Float32Array([perNode, -perNode]);
    await world.allReduce(extremes, extremes, {op: "max", tag: 7203});
    return extremes[0] === -extremes[1]!;
}

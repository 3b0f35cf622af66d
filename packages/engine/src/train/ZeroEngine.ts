import {engineSupportProblems, type ResolvedConfig} from "@mixz/config";
import {ErrorCodes, InputError, MixzError} from "@mixz/protocol";
import {loadCheckpoint, saveCheckpoint, type CheckpointAccess, type CheckpointInfo, type LoadCheckpointOptions, type SaveCheckpointOptions, type TrainingState} from "./checkpoint.js";
import type {NativeEngine, NativeEngineDescriptor, NativeEngineMetrics, NativeMemoryReport, NativeModelDType, NativeParamInfo, NativeSliceKind} from "../binding/AddonEngineTypes.js";
import type {NativeCommunicator} from "../binding/AddonCommunicatorTypes.js";
import {nativeCommunicatorOf, type Communicator} from "../comm/Communicator.js";
import {createLossScaler, lossScalerFromState, type LossScaler} from "./DynamicLossScaler.js";
import type {LlamaModel} from "../model/llama.js";
import {loadBinding} from "../binding/loadBinding.js";
import {callNative, callNativeSync, callSite} from "../binding/callNative.js";
import {exportPretrained, loadPretrainedWeights} from "../formats/pretrained.js";
import {engineDefaults} from "../engineDefaults.js";
import {buildZeroGroups, disposeGroups, planZeroPlusPlus, type ZeroGroups, type ZeroPlusPlusPlan} from "./zeroGroups.js";
import {createLrSchedule, type LrSchedule} from "./lrSchedule.js";
import {chooseDevice, type ComputeDevice, type DeviceChoice} from "./computeDevice.js";

/** One micro-batch: token ids and Hugging Face causal-LM labels (shifted inside, −100 ignored). */
export interface Batch {
    readonly inputIds: Int32Array;
    /** Required by forward() and evaluate(), which compute a loss; generate() takes prompt ids instead. */
    readonly labels?: Int32Array;
    /** [micro-batch, sequence length]. */
    readonly shape: readonly [number, number];
    /**
     * Packed rows (several examples in one row, as Hugging Face's DataCollatorWithFlattening
     * makes them): each token's position in its own example, 0 where an example starts, else the
     * previous token's + 1; each row starts at 0. A token attends only to its own example's
     * earlier tokens, and the rotary embedding uses these positions. Absent: every row is one
     * sequence at positions 0, 1, …. Give the first token of each example the label −100 (what
     * data.jsonl's packing does): the loss at a position predicts the next token's label.
     */
    readonly positionIds?: Int32Array;
}

/** What forward() returns; pass it to backward(). */
export interface Loss {
    /** Mean cross-entropy over this rank's counted positions (0 when every label is ignored). */
    readonly value: number;
    /** Positions whose label counted. */
    readonly tokens: number;
    /** @internal The forward this loss belongs to. */
    readonly forwardId: number;
}

export interface StepOutcome {
    /** Optimizer steps applied so far (skipped fp16 overflow steps do not count). */
    readonly globalSteps: number;
    /** Whether this boundary skipped the update (fp16 overflow). */
    readonly skipped: boolean;
    /** The learning rate the update used. */
    readonly lr: number;
    /** Global norm of the unscaled gradients; −1 when not finite. */
    readonly gradNorm: number;
    /** The loss scale after the update (1 without fp16). */
    readonly lossScale: number;
}

/** Per optimizer step, for the launcher's progress line and for benchmarks. */
export interface StepMetrics {
    readonly step: number;
    /** Mean of this rank's micro-batch losses since the previous step. */
    readonly loss: number;
    readonly tokensPerSec: number;
    readonly stepTimeMs: number;
    /** Time the compute thread waited for gathers (communication not hidden). */
    readonly gatherMs: number;
    readonly computeMs: number;
    /** Time the communication thread spent reduce-scattering gradients. */
    readonly reduceMs: number;
    /** Time the communication thread spent gathering (hidden or not). */
    readonly gatherBusyMs: number;
    /**
     * Time of the step spent outside engine calls: the script's own work between them, above all
     * producing the next batches (data loading). Near 0 means data never held up the step.
     */
    readonly outsideMs: number;
    readonly gatheredBytes: number;
    readonly reducedBytes: number;
    /**
     * Bytes this rank received during the step, by kind and by origin: "intra" from ranks on its
     * own plan host, "cross" from other hosts (zeropp.md §4.2's accounting).
     */
    readonly traffic: {
        readonly frozenGatherIntra: number;
        readonly frozenGatherCross: number;
        readonly trainableGatherIntra: number;
        readonly trainableGatherCross: number;
        readonly reduceIntra: number;
        readonly reduceCross: number;
    };
}

/** LoRA as applied to the engine's model (PEFT's LoraConfig fields). */
export interface LoraSettings {
    readonly r: number;
    readonly alpha: number;
    readonly dropout: number;
    readonly targetModules: readonly string[];
}

export interface GenerateOptions {
    /** Default 32. */
    readonly maxNewTokens?: number;
    /** ≤ 0: greedy. Default 1. */
    readonly temperature?: number;
    /** Sample among the k most likely tokens; 0: all. Default 0. */
    readonly topK?: number;
    /**
     * Nucleus sampling: among the most likely tokens whose probabilities first reach p (after
     * topK, as Hugging Face applies them). In (0, 1]; default 1 (no cut).
     */
    readonly topP?: number;
    /**
     * Token ids that end a sequence (a tokenizer's eosTokenIds, generation_config.json's
     * eos_token_id). A sequence that produced one is done: its later positions hold padTokenId,
     * and generation stops early once every sequence is done. Default: none.
     */
    readonly stopTokenIds?: readonly number[];
    /** What fills a finished sequence's later positions; default the first stop id, else 0. */
    readonly padTokenId?: number;
    /** The same seed gives the same tokens. Default 0. */
    readonly seed?: number;
}

export const loraTargetModules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;

export interface MemoryReport extends NativeMemoryReport {
    /** Sum of the resident categories (peaks excluded). */
    readonly total: number;
}

export interface ZeroEngineOptions {
    readonly model: LlamaModel;
    readonly config: ResolvedConfig;
    /**
     * A connected world communicator, owned by the engine once create() resolves (on a rejection
     * the caller still owns it). The engine builds the ZeRO++ groups it needs from it (hpZ, qgZ's
     * node and cross groups: train/zeroGroups.ts) and owns those.
     */
    readonly communicator: Communicator;
    /** Threads for the engine's kernels; default engineDefaults.kernelThreads. */
    readonly kernelThreads?: number;
    /** This rank's index on its host: the CUDA device it uses (train/computeDevice.ts); default $LOCAL_RANK, else 0. */
    readonly localRank?: number;
    /**
     * The device, decided by the caller instead of mixz.device / MIXZ_DEVICE (tests compare
     * "cpu-staged" with "cpu" this way). Default: train/computeDevice.ts decides.
     */
    readonly device?: ComputeDevice;
    /** Bounds every collective of the engine; default engineDefaults.timeoutMs. */
    readonly timeoutMs?: number;
    /** Called after every optimizer step. */
    readonly onStep?: (metrics: StepMetrics) => void;
}

const kIgnoreIndex = -100;

/**
 * A model trained with ZeRO stage 3 (reference/zeropp.md §2): partitions, gathers and reductions
 * run natively (native/src/zero/engine.cc); this class holds the policy DeepSpeed's engine holds —
 * batch arithmetic, gradient accumulation boundaries, loss scaling, the learning-rate schedule.
 */
export class ZeroEngine {
    readonly #native: NativeEngine;
    readonly #config: ResolvedConfig;
    readonly #model: LlamaModel;
    readonly #communicator: Communicator;
    readonly #schedule: LrSchedule;
    #scaler: LossScaler;
    readonly #accumulation: number;
    readonly #onStep: ((metrics: StepMetrics) => void) | undefined;
    #params: readonly NativeParamInfo[];
    /** An engine call ran since #params was taken (hasSecondary may have changed). */
    #paramsStale = false;
    readonly #plan: ZeroPlusPlusPlan;
    readonly #device: DeviceChoice;
    /** The groups the engine owns besides the world (hpZ, node, cross). */
    readonly #groups: ZeroGroups;
    #lora: LoraSettings | null = null;
    #forwardId = 0;
    #pendingBackward: number | null = null;
    #microSteps = 0;
    #globalSteps = 0;
    #losses: number[] = [];
    #tokens = 0;
    #stepStarted = performance.now();
    /** Time inside engine calls since the step started (for StepMetrics.outsideMs). */
    #insideMs = 0;
    #callStarted = performance.now();
    #busy = false;
    #disposed = false;
    #lastMetrics: StepMetrics | null = null;

    private constructor(native: NativeEngine, options: ZeroEngineOptions, plan: ZeroPlusPlusPlan, device: DeviceChoice, groups: ZeroGroups, accumulation: number, schedule: LrSchedule, scaler: LossScaler) {
        this.#native = native;
        this.#config = options.config;
        this.#model = options.model;
        this.#communicator = options.communicator;
        this.#accumulation = accumulation;
        this.#schedule = schedule;
        this.#scaler = scaler;
        this.#onStep = options.onStep;
        this.#params = native.params();
        this.#plan = plan;
        this.#device = device;
        this.#groups = groups;
    }

    /**
     * Partitions the model over the communicator's ranks (each rank initializes only its own
     * partitions, from the model's seed) and gathers the persistent parameters. A collective: every
     * rank calls it.
     */
    static async create(options: ZeroEngineOptions): Promise<ZeroEngine> {
        const {config, model, communicator} = options;
        const problems = engineSupportProblems(config);
        if (problems.length > 0) throw new InputError(problems);
        // Without an optimizer (an inference engine) nothing steps: a constant lr of 0 stands in
        // when no scheduler names one.
        const schedule = createLrSchedule(config.optimizer ?? (config.scheduler === null ? {type: "none", params: {lr: 0}} : null), config.scheduler);
        const scaler = createLossScaler(config);
        const accumulation = config.gradient_accumulation_steps ?? 1;
        const timeoutMs = options.timeoutMs ?? engineDefaults.timeoutMs;
        const device: DeviceChoice = options.device === undefined
            ? chooseDevice(config.mixz.device, options.localRank)
            : {device: options.device, ordinal: options.device === "cuda" ? (options.localRank ?? 0) : 0, source: "ZeroEngineOptions.device", requested: options.device};
        const plan = planZeroPlusPlus(config, communicator.members, communicator.rank);
        if (plan.quantizedGradientsFallback !== null && communicator.rank === 0) process.emitWarning(plan.quantizedGradientsFallback, {code: "MIXZ_WARN_QGZ_FALLBACK"});
        const site = callSite();
        const groups = await buildZeroGroups(communicator, plan, timeoutMs);
        let native: NativeEngine;
        try {
            const nativeOf = (comm: Communicator | null): NativeCommunicator | null => (comm === null ? null : nativeCommunicatorOf(comm));
            native = await callNative(site, () => loadBinding().createEngine(engineDescriptor(options, plan, device, timeoutMs), nativeCommunicatorOf(communicator), {
                hpz: nativeOf(groups.hpz),
                node: nativeOf(groups.node),
                cross: nativeOf(groups.cross)
            }));
        } catch (error) {
            await disposeGroups(groups).catch(() => undefined);
            throw error;
        }
        const engine = new ZeroEngine(native, options, plan, device, groups, accumulation, schedule, scaler);
        if (model.pretrained !== undefined) {
            await callNative(site, () => loadPretrainedWeights(engine.#checkpointAccess(), model.pretrained!)).catch(async (error: unknown) => {
                native.dispose();
                await disposeGroups(groups).catch(() => undefined);
                throw error;
            });
        }
        return engine;
    }

    /**
     * The ZeRO++ groups this engine runs with, as decided from the config and the world
     * (train/zeroGroups.ts): hpzSize (1 when hpZ is off), whether qgZ runs, nodes, ranks per node.
     */
    get zeroPlusPlus(): ZeroPlusPlusPlan {
        return this.#plan;
    }

    /** Where this rank computes (train/computeDevice.ts: mixz.device, MIXZ_DEVICE, LOCAL_RANK). */
    get device(): DeviceChoice {
        return this.#device;
    }

    /** Ranks per hpZ group: 1 when hpZ is off (zero_hpz_partition_size ≤ 1 or = world size). */
    get hpzSize(): number {
        return this.#plan.hpzSize;
    }

    get rank(): number {
        return this.#communicator.rank;
    }

    get worldSize(): number {
        return this.#communicator.size;
    }

    get model(): LlamaModel {
        return this.#model;
    }

    /** Parameters with their shapes and this rank's slice (hasSecondary as of now). */
    get parameters(): readonly NativeParamInfo[] {
        // While a call runs the native side is busy: the snapshot of before it stands.
        return this.#busy ? this.#params : this.#currentParams();
    }

    /**
     * Parameter `index` in full, as the forward computes with it (gathered like forward gathers it,
     * dequantized when int8). A collective: every rank calls it with the same index.
     */
    async gatheredParameter(index: number): Promise<Float32Array> {
        return this.#run("gatheredParameter", async () => {
            if (!Number.isInteger(index) || index < 0 || index >= this.#params.length) {
                throw new MixzError(ErrorCodes.engineState, `gatheredParameter(): no parameter with index ${index}`, {category: "user"});
            }
            if (this.#pendingBackward !== null) throw new MixzError(ErrorCodes.engineState, "gatheredParameter() between forward() and backward(); call backward() first", {category: "user"});
            return this.#native.gatherParameter(index);
        });
    }

    /** Optimizer steps applied (skipped overflow steps excluded). */
    get globalSteps(): number {
        return this.#globalSteps;
    }

    /** Micro-batches stepped since the start (every step() call). */
    get microSteps(): number {
        return this.#microSteps;
    }

    get gradientAccumulationSteps(): number {
        return this.#accumulation;
    }

    /** The loss scale that backward() applies (1 unless fp16). */
    get lossScale(): number {
        return this.#scaler.scale;
    }

    /** The learning rate the next optimizer step will use. */
    get lr(): number {
        return this.#schedule.lrAt(this.#globalSteps);
    }

    /** Forward of one training micro-batch; keeps activations for backward(). */
    async forward(batch: Batch): Promise<Loss> {
        return this.#run("forward", async () => {
            const checked = checkBatch(batch, this.#model.config.vocabSize, this.#model.config.maxSeqLen, true);
            // Any [rows, seq] is a batch, as DeepSpeed's forward takes any: the loss is the mean
            // over the batch's counted positions whatever its rows, and backward divides it by
            // gradient_accumulation_steps. train_micro_batch_size_per_gpu is the config's batch
            // arithmetic and the data loaders' default, not a rule of the engine.
            if (!this.hasOptimizer) {
                // An inference engine keeps nothing for a backward (there is none).
                const result = await this.#native.forward({...checked, train: false});
                return {value: result.loss, tokens: result.counted, forwardId: 0};
            }
            const result = await this.#native.forward({...checked, train: true});
            this.#pendingBackward = ++this.#forwardId;
            this.#losses.push(result.loss);
            this.#tokens += checked.micro * checked.seq;
            return {value: result.loss, tokens: result.counted, forwardId: this.#forwardId};
        });
    }

    /** Loss of a micro-batch without keeping anything for a backward (evaluation). */
    async evaluate(batch: Batch): Promise<Loss> {
        return this.#run("evaluate", async () => {
            if (this.#pendingBackward !== null) {
                throw new MixzError(ErrorCodes.engineState, "evaluate() between forward() and backward() would discard the activations backward needs; call backward() first", {category: "user"});
            }
            const checked = checkBatch(batch, this.#model.config.vocabSize, this.#model.config.maxSeqLen, true);
            const result = await this.#native.forward({...checked, train: false});
            return {value: result.loss, tokens: result.counted, forwardId: 0};
        });
    }

    /**
     * Gradients of `loss` (from the latest forward()), scaled by the loss scale and divided by the
     * gradient accumulation steps as DeepSpeed's engine.backward does, reduce-scattered (mean over
     * ranks) into this rank's gradient partitions.
     */
    async backward(loss: Loss): Promise<void> {
        return this.#run("backward", async () => {
            this.#requireOptimizer("backward");
            if (loss === null || typeof loss !== "object" || this.#pendingBackward === null || loss.forwardId !== this.#pendingBackward) {
                throw new MixzError(ErrorCodes.engineState, "backward(loss) needs the loss of the latest forward(), once; call forward() first", {category: "user"});
            }
            this.#pendingBackward = null;
            await this.#native.backward({lossGrad: this.#scaler.scale / this.#accumulation});
        });
    }

    /**
     * Counts a micro-step; at the gradient-accumulation boundary applies the optimizer (with the
     * schedule's lr, clipping and loss scaling) and returns what happened, else returns null.
     */
    async step(): Promise<StepOutcome | null> {
        return this.#run("step", async () => {
            this.#requireOptimizer("step");
            this.#microSteps += 1;
            if (this.#microSteps % this.#accumulation !== 0) return null;
            const lr = this.#schedule.lrAt(this.#globalSteps);
            const scale = this.#scaler.scale;
            const result = await this.#native.step({
                lr,
                lossScale: scale,
                gradientClipping: this.#config.gradient_clipping,
                checkOverflow: this.#scaler.checksOverflow
            });
            this.#scaler.update(result.overflow);
            if (!result.overflow) this.#globalSteps += 1;
            this.#reportStep(result.overflow);
            return {globalSteps: this.#globalSteps, skipped: result.overflow, lr, gradNorm: result.gradNorm, lossScale: this.#scaler.scale};
        });
    }

    /**
     * Whether the config has an optimizer section. Without one the engine is for inference, as
     * DeepSpeed's optimizer-less engines (DeepSpeed-Chat's reference and reward models): every
     * parameter is frozen, no gradient or optimizer state is allocated, forward() computes the loss
     * without keeping activations, and backward()/step() are refused.
     */
    get hasOptimizer(): boolean {
        return this.#config.optimizer !== null;
    }

    #requireOptimizer(call: string): void {
        if (!this.hasOptimizer) {
            throw new MixzError(ErrorCodes.engineState, `${call}(): the config has no optimizer section, so this engine is for inference (forward, evaluate, generate); add an optimizer section to train`, {category: "user"});
        }
    }

    /** LoRA settings once lora.apply() ran, else null. */
    get lora(): LoraSettings | null {
        return this.#lora;
    }

    /**
     * Converts the model to LoRA (PEFT semantics): every base parameter is frozen (its gradients,
     * fp32 master and Adam states are freed) and each target linear of every layer gets trainable
     * A [r, in] (uniform ±1/√in) and B [out, r] (zeros), so outputs are unchanged until training
     * moves B. Call between steps, after initialize(); every rank calls it alike. `dropout` (PEFT's
     * lora_dropout, in [0, 1), default 0) drops each adapter's input in training forwards only;
     * each rank and each training forward draws its own masks from `seed` (deterministic per run).
     */
    applyLora(options: {readonly r: number; readonly alpha?: number; readonly dropout?: number; readonly targetModules?: readonly string[]; readonly seed?: number}): void {
        this.#checkIdle("lora.apply");
        const problems: {code: string; path: string; message: string}[] = [];
        const bad = (path: string, message: string): void => {
            problems.push({code: ErrorCodes.modelConfig, path: `lora.apply: ${path}`, message});
        };
        const r = options?.r;
        if (typeof r !== "number" || !Number.isInteger(r) || r < 1 || r > 65_536) bad("r", `must be an integer in [1, 65536], got ${String(r)}`);
        const alpha = options?.alpha ?? (typeof r === "number" ? r : 8);
        if (typeof alpha !== "number" || !Number.isFinite(alpha) || alpha <= 0) bad("alpha", `must be a positive number, got ${String(alpha)}`);
        const dropout = options?.dropout ?? 0;
        if (typeof dropout !== "number" || !Number.isFinite(dropout) || dropout < 0 || dropout >= 1) bad("dropout", `must be a number in [0, 1), got ${String(dropout)}`);
        const targets = options?.targetModules ?? ["q_proj", "v_proj"];
        if (!Array.isArray(targets) || targets.length === 0) bad("targetModules", "must be a non-empty array of module names");
        else {
            for (const target of targets) {
                if (!(loraTargetModules as readonly string[]).includes(target)) bad("targetModules", `unknown module "${String(target)}" (known: ${loraTargetModules.join(", ")})`);
            }
        }
        const seed = options?.seed ?? this.#model.config.seed;
        if (this.#lora !== null) bad("", "LoRA is already applied to this model");
        if (this.#pendingBackward !== null) bad("", "apply LoRA between steps, not between forward() and backward()");
        if (problems.length > 0) throw new InputError(problems);
        const unique = [...new Set(targets)];
        callNativeSync(callSite(), () => this.#native.applyLora({r: r!, alpha, targets: unique, seed, dropout}));
        this.#lora = {r: r!, alpha, dropout, targetModules: unique};
        this.#params = this.#native.params();
    }

    /**
     * qwZ for frozen weights (zero_quantized_nontrainable_weights): the partitions of every frozen
     * parameter that is not kept gathered (persistent) — the primary and, with hpZ, the secondary,
     * built now from the gathered real values — become int8 blocks with float32 scales, once; from
     * then on their gathers move int8 and dequantize per parameter. With the config key off it
     * warns and does nothing, as DeepSpeed does. A collective: every rank calls it.
     */
    async quantizeNontrainableParams(): Promise<{readonly parameters: number; readonly bytesBefore: number; readonly bytesAfter: number}> {
        return this.#run("quantizeNontrainableParams", async () => {
            if (!this.#config.zero_optimization.zero_quantized_nontrainable_weights) {
                process.emitWarning("quantizeNontrainableParams(): zero_optimization.zero_quantized_nontrainable_weights is false, nothing is quantized", {code: "MIXZ_WARN_QUANTIZE_OFF"});
                return {parameters: 0, bytesBefore: 0, bytesAfter: 0};
            }
            if (this.#pendingBackward !== null) {
                throw new MixzError(ErrorCodes.engineState, "quantizeNontrainableParams() between forward() and backward(); call backward() first", {category: "user"});
            }
            return this.#native.quantizeNontrainable();
        });
    }

    /**
     * Continues each prompt (Int32Array of batch × length ids; `shape` [batch, length]) with a KV
     * cache, gathering each layer per token through hpZ where secondaries exist. Deterministic for
     * a seed; usable between training steps. A collective: every rank calls it with the same
     * shape. Returns [batch, maxNewTokens] ids.
     */
    async generate(promptIds: Int32Array, options: GenerateOptions & {readonly shape?: readonly [number, number]} = {}): Promise<Int32Array> {
        return this.#run("generate", async () => {
            if (!(promptIds instanceof Int32Array) || promptIds.length === 0) throw batchError("generate(): promptIds must be a non-empty Int32Array");
            const [batch, promptLength] = options.shape ?? [1, promptIds.length];
            if (!Number.isInteger(batch) || !Number.isInteger(promptLength) || batch < 1 || promptLength < 1 || batch * promptLength !== promptIds.length) {
                throw batchError(`generate(): shape [${batch}, ${promptLength}] does not match ${promptIds.length} prompt ids`);
            }
            const maxNewTokens = options.maxNewTokens ?? 32;
            const {vocabSize, maxSeqLen} = this.#model.config;
            if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw batchError(`generate(): maxNewTokens must be a positive integer, got ${maxNewTokens}`);
            if (promptLength + maxNewTokens > maxSeqLen) throw batchError(`generate(): prompt length ${promptLength} + maxNewTokens ${maxNewTokens} exceeds the model's maxSeqLen ${maxSeqLen}`);
            for (let i = 0; i < promptIds.length; i++) {
                const id = promptIds[i]!;
                if (id < 0 || id >= vocabSize) throw batchError(`generate(): promptIds[${i}] = ${id} is outside the vocabulary [0, ${vocabSize})`);
            }
            if (this.#pendingBackward !== null) {
                throw new MixzError(ErrorCodes.engineState, "generate() between forward() and backward() would discard the activations backward needs; call backward() first", {category: "user"});
            }
            const temperature = options.temperature ?? 1;
            const topK = options.topK ?? 0;
            const seed = options.seed ?? 0;
            if (!Number.isFinite(temperature)) throw batchError(`generate(): temperature must be a finite number, got ${temperature}`);
            if (!Number.isInteger(topK) || topK < 0) throw batchError(`generate(): topK must be an integer ≥ 0, got ${topK}`);
            if (!Number.isSafeInteger(seed) || seed < 0) throw batchError(`generate(): seed must be a non-negative integer, got ${seed}`);
            const topP = options.topP ?? 1;
            if (!(typeof topP === "number" && topP > 0 && topP <= 1)) throw batchError(`generate(): topP must be in (0, 1], got ${topP}`);
            const stops = options.stopTokenIds ?? [];
            const tokenId = (value: unknown, what: string): number => {
                if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value >= vocabSize) {
                    throw batchError(`generate(): ${what} = ${String(value)} is not a token id of the vocabulary [0, ${vocabSize})`);
                }
                return value;
            };
            if (!Array.isArray(stops)) throw batchError("generate(): stopTokenIds must be an array of token ids");
            const stopIds = Int32Array.from(stops, (id, i) => tokenId(id, `stopTokenIds[${i}]`));
            const padId = tokenId(options.padTokenId ?? stopIds[0] ?? 0, "padTokenId");
            return this.#native.generate({promptIds, batch, promptLength, maxNewTokens, temperature, topK, topP, seed, stopIds, padId});
        });
    }

    /** The metrics of the latest optimizer step (null before the first). */
    get lastStepMetrics(): StepMetrics | null {
        return this.#lastMetrics;
    }

    /** Bytes resident on this rank by category. */
    memoryReport(): MemoryReport {
        this.#checkIdle("memoryReport");
        const m = this.#native.memory();
        const total = m.parameterPartitions + m.quantizedPartitions + m.secondaryPartitions + m.quantScales + m.persistentParameters + m.gatheredParameters + m.gradientPartitions +
            m.masterWeights + m.optimizerStates + m.activations + m.communicationBuffers;
        return {...m, total};
    }

    /** This rank's slice of a parameter's state (see `parameters[index]`: sliceBegin, sliceLength), as float32. */
    readSlice(index: number, kind: NativeSliceKind): Float32Array {
        this.#checkIdle("readSlice");
        return callNativeSync(callSite(), () => this.#native.readSlice(index, kind));
    }

    /** Writes this rank's slice of a parameter's state (pretrained loads); "param" also sets the fp32 master. */
    writeSlice(index: number, kind: Exclude<NativeSliceKind, "grad">, values: Float32Array): void {
        this.#checkIdle("writeSlice");
        callNativeSync(callSite(), () => this.#native.writeSlice(index, kind, values));
    }

    /** @internal Training counters and policy state, for checkpoints. */
    trainingState(): TrainingState {
        this.#checkIdle("trainingState");
        return this.#trainingState();
    }

    /** @internal Restores what trainingState() returned. */
    restoreTrainingState(state: TrainingState): void {
        this.#checkIdle("restoreTrainingState");
        this.#prepareTrainingState(state)();
    }

    /**
     * Writes a checkpoint of every rank's partitions, optimizer states and training state to
     * `dir/<tag>/` (DeepSpeed's layout: one safetensors file per rank and a JSON manifest) and
     * points `dir/latest` at it, atomically: a crash mid-save leaves the previous checkpoint
     * loadable. A collective, at a gradient-accumulation boundary (after step() returned an
     * outcome). Layout and protocol: checkpoint.ts.
     */
    async saveCheckpoint(dir: string, options: SaveCheckpointOptions = {}): Promise<CheckpointInfo> {
        return this.#run("saveCheckpoint", async () => {
            if (this.#microSteps % this.#accumulation !== 0) {
                throw new MixzError(ErrorCodes.engineState,
                    `saveCheckpoint(): called after micro-step ${this.#microSteps % this.#accumulation} of ${this.#accumulation} of a gradient accumulation; ` +
                    "accumulated gradients are not saved, so save after the step() that returns an outcome", {category: "user"});
            }
            return saveCheckpoint(this.#checkpointAccess(), dir, options);
        });
    }

    /**
     * Loads `dir/<tag>` (default: the tag in `dir/latest`), re-partitioning when it was saved by
     * another world size. Everything is read and checked before anything is written, on every
     * rank: an error (InputError MIXZ_ERR_CHECKPOINT_STATE or MIXZ_ERR_SAFETENSORS naming the file)
     * leaves the engine as it was. A collective.
     */
    async loadCheckpoint(dir: string, options: LoadCheckpointOptions = {}): Promise<CheckpointInfo> {
        return this.#run("loadCheckpoint", async () => loadCheckpoint(this.#checkpointAccess(), dir, options));
    }

    /**
     * Writes a consolidated Hugging Face model (config.json + model.safetensors in the model dtype)
     * into `dir`, gathering one parameter at a time to rank 0. A collective. See pretrained.ts.
     */
    async exportPretrained(dir: string): Promise<void> {
        return this.#run("exportPretrained", async () => exportPretrained(this.#checkpointAccess(), dir));
    }

    /** @internal Runs `body` as an engine call with the checkpoint access (PEFT adapters: peftAdapter.ts). */
    async runCollective<T>(fn: string, body: (access: CheckpointAccess) => Promise<T>): Promise<T> {
        return this.#run(fn, async () => body(this.#checkpointAccess()));
    }

    /** Stops the engine's collectives at once (the job is aborting). */
    abort(reason: string): void {
        if (!this.#disposed) this.#native.abort(reason);
    }

    /** Frees the partitions and the communication thread, then the communicator. */
    async dispose(): Promise<void> {
        if (this.#disposed) return;
        if (this.#busy) throw new MixzError(ErrorCodes.engineState, "dispose(): an engine call is still running; await it first", {category: "user"});
        this.#disposed = true;
        this.#native.dispose();
        // Every communicator is released even if one of them fails to; the first failure is reported.
        const results = await Promise.allSettled([disposeGroups(this.#groups), this.#communicator.dispose()]);
        const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
        if (failed !== undefined) throw failed.reason;
    }

    async [Symbol.asyncDispose](): Promise<void> {
        await this.dispose();
    }

    #reportStep(skipped: boolean): void {
        const now = performance.now();
        const elapsed = now - this.#stepStarted;
        const m: NativeEngineMetrics = this.#native.takeMetrics();
        const loss = this.#losses.length === 0 ? 0 : this.#losses.reduce((a, b) => a + b, 0) / this.#losses.length;
        const metrics: StepMetrics = {
            step: this.#globalSteps,
            loss,
            tokensPerSec: elapsed > 0 ? (this.#tokens * 1000) / elapsed : 0,
            stepTimeMs: elapsed,
            gatherMs: m.gatherWaitSeconds * 1000,
            computeMs: m.computeSeconds * 1000,
            reduceMs: m.reduceSeconds * 1000,
            gatherBusyMs: m.gatherSeconds * 1000,
            // The step call itself is still running: it counts as inside up to now.
            outsideMs: Math.max(0, elapsed - this.#insideMs - (now - this.#callStarted)),
            gatheredBytes: m.gatheredBytes,
            reducedBytes: m.reducedBytes,
            traffic: {
                frozenGatherIntra: m.frozenGatherIntraBytes,
                frozenGatherCross: m.frozenGatherCrossBytes,
                trainableGatherIntra: m.trainableGatherIntraBytes,
                trainableGatherCross: m.trainableGatherCrossBytes,
                reduceIntra: m.reduceIntraBytes,
                reduceCross: m.reduceCrossBytes
            }
        };
        this.#losses = [];
        this.#tokens = 0;
        this.#stepStarted = now;
        this.#insideMs = 0;
        this.#callStarted = now;
        void skipped;
        this.#lastMetrics = metrics;
        this.#onStep?.(metrics);
    }

    #trainingState(): TrainingState {
        return {
            globalSteps: this.#globalSteps,
            microSteps: this.#microSteps,
            optimizerSteps: this.#native.optimizerSteps(),
            trainingForwards: this.#native.trainingForwards(),
            lossScaler: this.#scaler.state(),
            lrScheduler: this.#schedule.state(this.#globalSteps)
        };
    }

    /** Checks a saved state (MIXZ_ERR_CHECKPOINT_STATE) and returns the function that applies it. */
    #prepareTrainingState(state: TrainingState): () => void {
        const steps = this.#schedule.stepFromState(state.lrScheduler);
        const scaler = lossScalerFromState(state.lossScaler);
        for (const key of ["microSteps", "optimizerSteps", "trainingForwards"] as const) {
            const value = key === "trainingForwards" ? (state.trainingForwards ?? 0) : state[key];
            if (!Number.isSafeInteger(value) || value < 0) {
                throw new MixzError(ErrorCodes.checkpointState, `training state ${key} must be an integer ≥ 0, got ${String(value)}`, {category: "user"});
            }
        }
        return () => {
            this.#scaler = scaler;
            this.#globalSteps = steps;
            this.#microSteps = state.microSteps;
            this.#native.setOptimizerSteps(state.optimizerSteps);
            this.#native.setTrainingForwards(state.trainingForwards ?? 0);
            this.#native.zeroGradients();
            this.#pendingBackward = null;
        };
    }

    /**
     * What checkpoint.ts may use while this engine is busy with a checkpoint: slices, training
     * state, and collectives on the world communicator, which are safe from JS while no engine
     * call is in flight (the #run around the checkpoint guarantees that). Checkpoint collectives
     * use their own tags (comm/collectiveTags.ts).
     */
    #checkpointAccess(): CheckpointAccess {
        return {
            rank: this.rank,
            worldSize: this.worldSize,
            dtype: modelDType(this.#config),
            model: this.#model,
            parameters: this.#currentParams(),
            gradientAccumulationSteps: this.#accumulation,
            readSlice: (index, kind) => this.#native.readSlice(index, kind),
            writeSlice: (index, kind, values) => this.#native.writeSlice(index, kind, values),
            trainingState: () => this.#trainingState(),
            prepareTrainingState: (state) => this.#prepareTrainingState(state),
            broadcast: (buffer, tag) => this.#communicator.broadcast(buffer, {root: 0, tag}),
            allGather: (input, output, tag) => this.#communicator.allGather(input, output, {tag})
        };
    }

    /** The parameters, taken from the native side again if a call ran since (no call may be in flight natively). */
    #currentParams(): readonly NativeParamInfo[] {
        if (this.#paramsStale && !this.#disposed) {
            this.#params = this.#native.params();
            this.#paramsStale = false;
        }
        return this.#params;
    }

    #checkLive(fn: string): void {
        if (this.#disposed) throw new MixzError(ErrorCodes.engineState, `${fn}(): the engine was disposed`, {category: "user"});
    }

    #checkIdle(fn: string): void {
        this.#checkLive(fn);
        if (this.#busy) throw new MixzError(ErrorCodes.engineState, `${fn}(): another engine call is running; await it first`, {category: "user"});
    }

    /** One engine call at a time; native failures carry the caller's stack (binding/callNative.ts). */
    async #run<T>(fn: string, body: () => Promise<T>): Promise<T> {
        const site = callSite();
        this.#checkIdle(fn);
        this.#busy = true;
        this.#callStarted = performance.now();
        try {
            return await callNative(site, body);
        } finally {
            this.#insideMs += performance.now() - this.#callStarted;
            this.#busy = false;
            // Secondaries come and go with gathers and steps: the snapshot is taken again when read,
            // not after every call (forward, backward and step are the hot path).
            this.#paramsStale = true;
        }
    }
}

function modelDType(config: ResolvedConfig): NativeModelDType {
    if (config.fp16.enabled) return "fp16";
    if (config.bf16.enabled) return "bf16";
    return "fp32";
}

/** Caps a config size (DeepSpeed allows up to sys.maxsize) to what the native side takes. */
function clampSize(value: number): number {
    return Math.min(Math.max(0, Math.floor(value)), Number.MAX_SAFE_INTEGER);
}

function engineDescriptor(options: ZeroEngineOptions, plan: ZeroPlusPlusPlan, device: DeviceChoice, timeoutMs: number): NativeEngineDescriptor {
    const {config, model} = options;
    const zero = config.zero_optimization;
    // Without an optimizer the native side reads no optimizer field (hasOptimizer false).
    const adam = config.optimizer?.params ?? {betas: [0, 0] as const, eps: 0, weight_decay: 0, adam_w_mode: false};
    return {
        dims: model.dims,
        dtype: modelDType(config),
        seed: model.config.seed,
        initStd: model.config.initStd,
        zero: {
            prefetchBucketSize: clampSize(zero.stage3_prefetch_bucket_size),
            maxLiveParameters: clampSize(zero.stage3_max_live_parameters),
            persistenceThreshold: clampSize(zero.stage3_param_persistence_threshold),
            reduceBucketSize: Math.max(1, clampSize(zero.reduce_bucket_size)),
            overlapComm: zero.overlap_comm
        },
        hasOptimizer: config.optimizer !== null,
        optimizer: {
            beta1: adam.betas[0],
            beta2: adam.betas[1],
            eps: adam.eps,
            weightDecay: adam.weight_decay,
            decoupledWeightDecay: config.optimizer?.type === "adamw" || adam.adam_w_mode
        },
        kernelThreads: options.kernelThreads ?? engineDefaults.kernelThreads,
        device: device.device,
        deviceOrdinal: device.ordinal,
        quantBlockSize: config.mixz.quant_block_size,
        quantizeWeights: zero.zero_quantized_weights,
        // The policy's decisions: the native side checks them against the groups it gets.
        hpzSize: plan.hpzSize,
        quantizeGradients: plan.quantizedGradients,
        gradientCommDType: config.communication_data_type ?? modelDType(config),
        timeoutMs
    };
}

interface CheckedBatch {
    readonly inputIds: Int32Array;
    readonly labels: Int32Array | null;
    readonly micro: number;
    readonly seq: number;
    readonly positionIds: Int32Array | null;
}

function batchError(message: string): InputError {
    return new InputError([{code: ErrorCodes.batch, path: "batch", message}]);
}

/** Shapes, types and values, so the native side never sees a bad batch. */
function checkBatch(batch: Batch, vocab: number, maxSeq: number, needLabels: boolean): CheckedBatch {
    if (batch === null || typeof batch !== "object") throw batchError("must be an object {inputIds, labels, shape}");
    const {inputIds, labels, shape} = batch;
    if (!(inputIds instanceof Int32Array)) throw batchError(`inputIds must be an Int32Array, got ${describeValue(inputIds)}`);
    if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((n) => Number.isInteger(n) && n > 0)) {
        throw batchError(`shape must be [micro-batch, sequence length] of positive integers, got ${JSON.stringify(shape)}`);
    }
    const [micro, seq] = shape as [number, number];
    if (inputIds.length !== micro * seq) throw batchError(`inputIds has ${inputIds.length} ids, shape [${micro}, ${seq}] needs ${micro * seq}`);
    if (seq > maxSeq) throw batchError(`sequence length ${seq} exceeds the model's maxSeqLen ${maxSeq}`);
    for (let i = 0; i < inputIds.length; i++) {
        const id = inputIds[i]!;
        if (id < 0 || id >= vocab) throw batchError(`inputIds[${i}] = ${id} is outside the vocabulary [0, ${vocab})`);
    }
    const positionIds = checkPositions(batch.positionIds, micro, seq);
    if (labels === undefined) {
        if (needLabels) throw batchError("labels are required for a loss (use -100 to ignore a position)");
        return {inputIds, labels: null, micro, seq, positionIds};
    }
    if (!(labels instanceof Int32Array)) throw batchError(`labels must be an Int32Array, got ${describeValue(labels)}`);
    if (labels.length !== inputIds.length) throw batchError(`labels has ${labels.length} entries, inputIds has ${inputIds.length}`);
    for (let i = 0; i < labels.length; i++) {
        const label = labels[i]!;
        if (label !== kIgnoreIndex && (label < 0 || label >= vocab)) {
            throw batchError(`labels[${i}] = ${label} is outside the vocabulary [0, ${vocab}) and is not the ignore index -100`);
        }
    }
    return {inputIds, labels, micro, seq, positionIds};
}

/** Packed rows' positions: 0 at each example's start (and each row's), else the previous + 1. */
function checkPositions(positions: Int32Array | undefined, micro: number, seq: number): Int32Array | null {
    if (positions === undefined) return null;
    if (!(positions instanceof Int32Array)) throw batchError(`positionIds must be an Int32Array, got ${describeValue(positions)}`);
    if (positions.length !== micro * seq) throw batchError(`positionIds has ${positions.length} entries, shape [${micro}, ${seq}] needs ${micro * seq}`);
    for (let i = 0; i < positions.length; i++) {
        const p = positions[i]!;
        const start = i % seq === 0;
        if (start ? p !== 0 : p !== 0 && p !== positions[i - 1]! + 1) {
            throw batchError(`positionIds[${i}] = ${p}: ${start ? "a row starts at position 0" : `expected 0 (a new example) or ${positions[i - 1]! + 1}`}`);
        }
    }
    return positions;
}

function describeValue(value: unknown): string {
    if (value === null) return "null";
    if (ArrayBuffer.isView(value)) return value.constructor.name;
    if (Array.isArray(value)) return "an array";
    return typeof value;
}

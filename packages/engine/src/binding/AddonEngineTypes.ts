/**
 * The native types of the ZeRO-3 engine exports (native/addon/AddonEngine.h). Part of
 * BindingModule (AddonTypes.ts). Descriptors are complete: ZeroEngine validates the user's config
 * and model and fills in every default; the addon checks again (MIXZ_ERR_INVALID_ARGUMENT).
 */
import type {NativeCommunicator} from "./AddonCommunicatorTypes.js";

export type NativeModelDType = "fp32" | "fp16" | "bf16";

export interface NativeLlamaDims {
    readonly vocab: number;
    readonly hidden: number;
    readonly layers: number;
    readonly heads: number;
    readonly kvHeads: number;
    readonly intermediate: number;
    readonly maxSeq: number;
    readonly ropeTheta: number;
    readonly rmsEps: number;
    /** Rotary scaling (LlamaConfig.ropeScaling); the four numbers are always sent, read as the kind needs. */
    readonly ropeScaling: "none" | "linear" | "llama3";
    readonly ropeFactor: number;
    readonly ropeLowFreqFactor: number;
    readonly ropeHighFreqFactor: number;
    readonly ropeOriginalMaxSeq: number;
    /** LlamaConfig.attentionBias: q/k/v biases (Qwen2) in the parameter set. */
    readonly attentionBias: boolean;
}

export interface NativeEngineDescriptor {
    readonly dims: NativeLlamaDims;
    readonly dtype: NativeModelDType;
    readonly seed: number;
    readonly initStd: number;
    readonly zero: {
        readonly prefetchBucketSize: number;
        readonly maxLiveParameters: number;
        readonly persistenceThreshold: number;
        readonly reduceBucketSize: number;
        readonly overlapComm: boolean;
    };
    /** false: an inference engine (no optimizer section): every parameter frozen, backward/step refused. */
    readonly hasOptimizer: boolean;
    /** Not read without an optimizer. */
    readonly optimizer: {
        readonly beta1: number;
        readonly beta2: number;
        readonly eps: number;
        readonly weightDecay: number;
        readonly decoupledWeightDecay: boolean;
    };
    readonly kernelThreads: number;
    /** Resolved by train/computeDevice.ts ("auto" never reaches the native side). */
    readonly device: "cpu" | "cuda" | "cpu-staged";
    /** The CUDA device among the visible ones (0 on the CPU). */
    readonly deviceOrdinal: number;
    /** Elements per qwZ block (mixz.quant_block_size). */
    readonly quantBlockSize: number;
    /** zero_quantized_weights: world gathers of non-int8 partitions move int8 blocks. */
    readonly quantizeWeights: boolean;
    /**
     * Ranks per hpZ group as the engine's policy decided (train/zeroGroups.ts); 1: no hpZ. The
     * native side checks it against the hpz group it is given.
     */
    readonly hpzSize: number;
    /** qgZ runs (the policy's decision): two-level reduction, int4 between nodes; the node and cross groups are given. */
    readonly quantizeGradients: boolean;
    /** The dtype of gradients in the reduce-scatter: communication_data_type, default the model dtype (DeepSpeed's). */
    readonly gradientCommDType: NativeModelDType;
    readonly timeoutMs: number;
}

export interface NativeParamInfo {
    readonly name: string;
    readonly shape: readonly number[];
    readonly numel: number;
    /** Elements per rank (padded numel / world size). */
    readonly partition: number;
    readonly unit: number;
    readonly trainable: boolean;
    readonly persistent: boolean;
    /** Frozen and stored as int8 blocks with float32 scales (after quantizeNontrainable). */
    readonly quantized: boolean;
    /** An hpZ secondary partition is held now (after a gather; trainable ones are dropped at every step). */
    readonly hasSecondary: boolean;
    /** This rank's unpadded slice of the flattened tensor: [sliceBegin, sliceBegin + sliceLength). */
    readonly sliceBegin: number;
    readonly sliceLength: number;
}

export interface NativeBatch {
    readonly inputIds: Int32Array;
    readonly labels: Int32Array | null;
    readonly micro: number;
    readonly seq: number;
    readonly train: boolean;
    /** Packed rows' per-example positions (ZeroEngine's Batch.positionIds, checked), or null. */
    readonly positionIds: Int32Array | null;
}

export type NativeSliceKind = "param" | "master" | "exp_avg" | "exp_avg_sq" | "grad";

export interface NativeMemoryReport {
    /** Primary partitions in the model dtype. */
    readonly parameterPartitions: number;
    /** Primary partitions of int8 frozen parameters (codes). */
    readonly quantizedPartitions: number;
    /** hpZ secondary partitions (model dtype or int8 codes). */
    readonly secondaryPartitions: number;
    /** float32 scales of every int8 partition. */
    readonly quantScales: number;
    readonly persistentParameters: number;
    readonly gatheredParameters: number;
    readonly gatheredParametersPeak: number;
    readonly gradientPartitions: number;
    readonly masterWeights: number;
    readonly optimizerStates: number;
    readonly activations: number;
    readonly activationsPeak: number;
    readonly communicationBuffers: number;
}

export interface NativeEngineMetrics {
    readonly computeSeconds: number;
    readonly gatherWaitSeconds: number;
    readonly reduceWaitSeconds: number;
    readonly gatherSeconds: number;
    readonly reduceSeconds: number;
    readonly optimizerSeconds: number;
    readonly gatheredBytes: number;
    readonly reducedBytes: number;
    /** Bytes received from ranks on this rank's host (intra) or other hosts (cross), by kind. */
    readonly frozenGatherIntraBytes: number;
    readonly frozenGatherCrossBytes: number;
    readonly trainableGatherIntraBytes: number;
    readonly trainableGatherCrossBytes: number;
    readonly reduceIntraBytes: number;
    readonly reduceCrossBytes: number;
}

export interface NativeLoraOptions {
    readonly r: number;
    readonly alpha: number;
    readonly targets: readonly string[];
    readonly seed: number;
    /** LoRA dropout probability in [0, 1) (training forwards only). */
    readonly dropout: number;
}

export interface NativeGenerateOptions {
    readonly promptIds: Int32Array;
    readonly batch: number;
    readonly promptLength: number;
    readonly maxNewTokens: number;
    readonly temperature: number;
    readonly topK: number;
    /** In (0, 1]; 1: no nucleus cut. */
    readonly topP: number;
    readonly seed: number;
    /** A sequence is done after producing one of these; its later positions hold padId. */
    readonly stopIds: Int32Array;
    readonly padId: number;
}

export interface NativeEngine {
    params(): NativeParamInfo[];
    forward(batch: NativeBatch): Promise<{loss: number; counted: number}>;
    backward(options: {lossGrad: number}): Promise<void>;
    step(options: {lr: number; lossScale: number; gradientClipping: number; checkOverflow: boolean}): Promise<{overflow: boolean; gradNorm: number}>;
    zeroGradients(): void;
    readSlice(index: number, kind: NativeSliceKind): Float32Array;
    writeSlice(index: number, kind: Exclude<NativeSliceKind, "grad">, values: Float32Array): void;
    optimizerSteps(): number;
    setOptimizerSteps(steps: number): void;
    trainingForwards(): number;
    setTrainingForwards(forwards: number): void;
    memory(): NativeMemoryReport;
    takeMetrics(): NativeEngineMetrics;
    applyLora(options: NativeLoraOptions): void;
    quantizeNontrainable(): Promise<{parameters: number; bytesBefore: number; bytesAfter: number}>;
    generate(options: NativeGenerateOptions): Promise<Int32Array>;
    gatherParameter(index: number): Promise<Float32Array>;
    abort(reason: string): void;
    dispose(): void;
}

export interface NativeEngineGroups {
    readonly hpz: NativeCommunicator | null;
    readonly node: NativeCommunicator | null;
    readonly cross: NativeCommunicator | null;
}

export type NativeCreateEngine = (descriptor: NativeEngineDescriptor, communicator: NativeCommunicator, groups: NativeEngineGroups) => Promise<NativeEngine>;

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
    readonly optimizer: {
        readonly beta1: number;
        readonly beta2: number;
        readonly eps: number;
        readonly weightDecay: number;
        readonly decoupledWeightDecay: boolean;
    };
    readonly kernelThreads: number;
    readonly tagBase: number;
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
}

export type NativeSliceKind = "param" | "master" | "exp_avg" | "exp_avg_sq" | "grad";

export interface NativeMemoryReport {
    readonly parameterPartitions: number;
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
    memory(): NativeMemoryReport;
    takeMetrics(): NativeEngineMetrics;
    abort(reason: string): void;
    dispose(): void;
}

export type NativeCreateEngine = (descriptor: NativeEngineDescriptor, communicator: NativeCommunicator) => Promise<NativeEngine>;

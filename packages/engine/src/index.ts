// @mixz/engine: the only package that touches the native addon.
export {bindingExportTypes, NativeErrorCodes} from "./AddonTypes.js";
export type {
    BindingModule,
    NativeBlasInfo,
    NativeBlasParallelism,
    NativeBuildInfo,
    NativeConvertFloatsDescriptor,
    NativeCpuInfo,
    NativeDequantizeDescriptor,
    NativeDequantizeSegment,
    NativeDequantizeSegmentsDescriptor,
    NativeErrorCode,
    NativeFloatDType,
    NativeGlooInfo,
    NativeProcessGroup,
    NativeQuantBenchmarkDescriptor,
    NativeQuantBenchmarkResult,
    NativeQuantBits,
    NativeQuantInfo,
    NativeQuantizeDescriptor,
    NativeSimd,
    NativeWatchdog,
    NativeWatchdogConstructor,
    NativeWatchdogOptions
} from "./AddonTypes.js";
export {loadBinding} from "./loadBinding.js";
export type {LoadBindingOptions} from "./loadBinding.js";
export {nativeInfo} from "./nativeInfo.js";
export {probeBinding} from "./probeBinding.js";
export type {ProbeBindingOptions} from "./probeBinding.js";
export {defaultBindingPaths, nativeBinaryEnvVar, resolveBindingPath} from "./resolveBindingPath.js";
export type {BindingLocation} from "./resolveBindingPath.js";
export {maxWatchdogLabelBytes, maxWatchdogLeaseMs, processGroup, startWatchdog} from "./startWatchdog.js";
export type {ProcessGroup, ProcessWatchdog, WatchdogOptions} from "./startWatchdog.js";
export {
    convertFloats,
    defaultQuantBlockSize,
    dequantize,
    dequantizeSegments,
    maxQuantBlockSize,
    minQuantBlockSize,
    paddedSize,
    quantBenchmark,
    quantBlockCount,
    quantInfo,
    quantize,
    quantizedBytes,
    quantSimdEnvVar
} from "./quantize.js";
export type {
    CodeArrayOf,
    ConvertFloatsOptions,
    DequantizeOptions,
    DequantizeSegmentsOptions,
    FloatArray,
    FloatArrayOf,
    FloatDType,
    KernelOptions,
    QuantBenchmarkOptions,
    QuantBenchmarkResult,
    QuantBits,
    QuantInfo,
    QuantizedTensor,
    QuantizeOptions,
    QuantSegment,
    SimdMode
} from "./quantize.js";
export {Communicator, maxCommTag, maxCommTimeoutMs} from "./Communicator.js";
export type {
    AddressExchange,
    BroadcastOptions,
    CollectiveOptions,
    CommBuffer,
    CommDType,
    CommKind,
    CommMember,
    CommTransport,
    CommunicatorOptions,
    ReduceOp,
    ReduceOptions
} from "./Communicator.js";
export {storeExchange} from "./storeExchange.js";
export type {ExchangeStore, StoreExchangeOptions} from "./storeExchange.js";
export type {
    NativeAllGatherDescriptor,
    NativeAllGatherVDescriptor,
    NativeBroadcastDescriptor,
    NativeCallDescriptor,
    NativeCommBenchmarkDescriptor,
    NativeCommBuffer,
    NativeCommFaultDescriptor,
    NativeCommFaultReport,
    NativeCommMember,
    NativeCommSelfTestDescriptor,
    NativeCommSelfTestReport,
    NativeCommTransport,
    NativeCommunicator,
    NativeCommunicatorConstructor,
    NativeCommunicatorInfo,
    NativeCommunicatorOptions,
    NativeGroupDescriptor,
    NativeReduceDescriptor,
    NativeReduceOp
} from "./AddonCommunicatorTypes.js";
export {quantizedAllGather} from "./quantizedAllGather.js";
export type {QuantizedAllGatherOptions, QuantizedAllGatherResult} from "./quantizedAllGather.js";
// training-state helpers
export {
    maxSafetensorsHeaderBytes,
    readSafetensorsHeader,
    readTensor,
    safetensorsDTypes,
    safetensorsItemSize,
    writeSafetensors
} from "./safetensors.js";
export type {
    SafetensorsArray,
    SafetensorsArrayOf,
    SafetensorsData,
    SafetensorsDType,
    SafetensorsHeader,
    SafetensorsReadOptions,
    SafetensorsTensor,
    SafetensorsTensorInfo,
    TensorRange
} from "./safetensors.js";
export {createLrSchedule, supportedLrSchedulers} from "./lrSchedule.js";
export type {
    LrSchedule,
    LrScheduleOptimizerConfig,
    LrSchedulerConfig,
    LrScheduleState,
    LrWarmupType,
    WarmupCosineLRScheduleParams,
    WarmupDecayLRScheduleParams,
    WarmupLRScheduleParams
} from "./lrSchedule.js";
export {createLossScaler, DynamicLossScaler, lossScalerFromState, StaticLossScaler} from "./DynamicLossScaler.js";
export type {
    DynamicLossScalerOptions,
    DynamicLossScalerState,
    LossScaler,
    LossScalerConfig,
    LossScalerState,
    StaticLossScalerState
} from "./DynamicLossScaler.js";
// ZeRO-3 training engine.
export {llama, llamaParameterCount} from "./llama.js";
export type {LlamaConfig, LlamaModel} from "./llama.js";
export {ZeroEngine} from "./ZeroEngine.js";
export {loraTargetModules} from "./ZeroEngine.js";
export type {Batch, GenerateOptions, Loss, MemoryReport, StepMetrics, StepOutcome, ZeroEngineOptions} from "./ZeroEngine.js";
export type {NativeEngine, NativeEngineDescriptor, NativeParamInfo, NativeSliceKind, NativeMemoryReport, NativeEngineMetrics} from "./AddonEngineTypes.js";
// checkpoints
export {checkpointFormat, checkpointLatestName, checkpointManifestName, checkpointVersion} from "./checkpoint.js";
export type {CheckpointInfo, CheckpointStage, LoadCheckpointOptions, SaveCheckpointOptions, TrainingState} from "./checkpoint.js";
// pretrained + peft + data
export {fromPretrainedLlama, hfConfigOf, llamaTensorShapes, pretrainedConfigName, pretrainedIndexName, pretrainedLoadReport, pretrainedWeightsName} from "./pretrained.js";
export type {FromPretrainedOptions, PretrainedDType, PretrainedLoadReport, PretrainedSource, PretrainedTensor} from "./pretrained.js";
export {checkPeftAdapterConfig, foldLora, loadPeftAdapter, loraModuleBlocks, mergeLora, peftAdapterConfig, peftConfigName, peftTensorName, peftTensorPrefix, peftWeightsName, savePeftAdapter} from "./peftAdapter.js";
export type {LoraSettings} from "./peftAdapter.js";
export {permutation as tokenDataPermutation, textData, tokenData} from "./data.js";
export type {TextDataOptions, TokenBatches, TokenDataOptions, TokenDType} from "./data.js";

// @mixz/engine: the only package that touches the native addon.
export {bindingExportTypes, NativeErrorCodes} from "./binding/AddonTypes.js";
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
} from "./binding/AddonTypes.js";
export {loadBinding} from "./binding/loadBinding.js";
export type {LoadBindingOptions} from "./binding/loadBinding.js";
export {nativeInfo} from "./binding/nativeInfo.js";
export {probeBinding, probeNative} from "./binding/probeBinding.js";
export type {NativeProbe, ProbeBindingOptions} from "./binding/probeBinding.js";
export type {NativeCudaDevice, NativeCudaLibrary, NativeCudaProbe} from "./binding/AddonCudaTypes.js";
export {cudaInfo} from "./binding/nativeInfo.js";
export {defaultBindingPaths, nativeBinaryEnvVar, resolveBindingPath} from "./binding/resolveBindingPath.js";
export type {BindingLocation} from "./binding/resolveBindingPath.js";
export {maxWatchdogLabelBytes, maxWatchdogLeaseMs, processGroup, startWatchdog} from "./runtime/startWatchdog.js";
export type {ProcessGroup, ProcessWatchdog, WatchdogOptions} from "./runtime/startWatchdog.js";
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
} from "./quant/quantize.js";
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
} from "./quant/quantize.js";
export {Communicator, maxCommTag, maxCommTimeoutMs} from "./comm/Communicator.js";
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
} from "./comm/Communicator.js";
export {storeExchange} from "./comm/storeExchange.js";
export type {ExchangeStore, StoreExchangeOptions} from "./comm/storeExchange.js";
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
} from "./binding/AddonCommunicatorTypes.js";
export {quantizedAllGather} from "./comm/quantizedAllGather.js";
export type {QuantizedAllGatherOptions, QuantizedAllGatherResult} from "./comm/quantizedAllGather.js";
// training-state helpers
export {
    maxSafetensorsHeaderBytes,
    readSafetensorsHeader,
    readTensor,
    safetensorsDTypes,
    safetensorsItemSize,
    writeSafetensors
} from "./formats/safetensors.js";
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
} from "./formats/safetensors.js";
export {createLrSchedule, supportedLrSchedulers} from "./train/lrSchedule.js";
export type {
    LrSchedule,
    LrScheduleOptimizerConfig,
    LrSchedulerConfig,
    LrScheduleState,
    LrWarmupType,
    WarmupCosineLRScheduleParams,
    WarmupDecayLRScheduleParams,
    WarmupLRScheduleParams
} from "./train/lrSchedule.js";
export {createLossScaler, DynamicLossScaler, lossScalerFromState, StaticLossScaler} from "./train/DynamicLossScaler.js";
export type {
    DynamicLossScalerOptions,
    DynamicLossScalerState,
    LossScaler,
    LossScalerConfig,
    LossScalerState,
    StaticLossScalerState
} from "./train/DynamicLossScaler.js";
// ZeRO-3 training engine.
export {llama, llamaParameterCount} from "./model/llama.js";
export type {LlamaConfig, LlamaModel} from "./model/llama.js";
export {ZeroEngine} from "./train/ZeroEngine.js";
export {hpzActive, planZeroPlusPlus} from "./train/zeroGroups.js";
export type {ZeroPlusPlusPlan} from "./train/zeroGroups.js";
export {chooseDevice, cudaVerifiedOnHardware, deviceEnvVar} from "./train/computeDevice.js";
export type {ComputeDevice, DeviceChoice, RequestedDevice} from "./train/computeDevice.js";
export {engineDefaults} from "./engineDefaults.js";
export {CollectiveTags, nativeEngineTagRange, registeredTags} from "./comm/collectiveTags.js";
export type {CollectiveTag} from "./comm/collectiveTags.js";
export {loraTargetModules} from "./train/ZeroEngine.js";
export type {Batch, GenerateOptions, Loss, MemoryReport, StepMetrics, StepOutcome, ZeroEngineOptions} from "./train/ZeroEngine.js";
export type {NativeEngine, NativeEngineDescriptor, NativeParamInfo, NativeSliceKind, NativeMemoryReport, NativeEngineMetrics} from "./binding/AddonEngineTypes.js";
// checkpoints
export {checkpointFormat, checkpointLatestName, checkpointManifestName, checkpointVersion} from "./train/checkpoint.js";
export type {CheckpointInfo, CheckpointStage, LoadCheckpointOptions, SaveCheckpointOptions, TrainingState} from "./train/checkpoint.js";
// pretrained + peft + data
export {fromPretrainedLlama, hfConfigOf, llamaTensorShapes, pretrainedConfigName, pretrainedIndexName, pretrainedLoadReport, pretrainedWeightsName} from "./formats/pretrained.js";
export type {FromPretrainedOptions, PretrainedDType, PretrainedLoadReport, PretrainedSource, PretrainedTensor} from "./formats/pretrained.js";
export {checkPeftAdapterConfig, foldLora, loadPeftAdapter, loraModuleBlocks, mergeLora, peftAdapterConfig, peftConfigName, peftTensorName, peftTensorPrefix, peftWeightsName, savePeftAdapter} from "./formats/peftAdapter.js";
export type {LoraSettings} from "./formats/peftAdapter.js";
export {permutation as tokenDataPermutation, textData, tokenData} from "./data/data.js";
export type {TextDataOptions, TokenBatches, TokenDataOptions, TokenDType} from "./data/data.js";
export {jsonlData} from "./data/jsonl.js";
export type {ChatMessage, JsonlBatches, JsonlDataOptions, JsonlDataPosition, JsonlFormat, TextTokenizer} from "./data/jsonl.js";
export {everyRankTries, peerFailure, rootTries} from "./comm/ranksAgree.js";
export type {AgreementChannel, AgreementFailure} from "./comm/ranksAgree.js";
export {callNative, callNativeSync, callSite, fromNative, nativeErrorCategory} from "./binding/callNative.js";

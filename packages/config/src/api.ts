/**
 * The types of @mixz/config: what callers pass in (ConfigContext), what they get back
 * (ConfigResult, ResolvedConfig) and the codes of its warnings. Implementations live elsewhere.
 *
 * ResolvedConfig uses DeepSpeed's documented key names (`stage3_prefetch_bucket_size`, `bf16`),
 * so `JSON.stringify(result.config)` is a DeepSpeed config again, with every default written out.
 */
import type {Problem} from "@mixz/protocol";

/** What the config is checked against. Everything is optional; rules that need a missing fact are listed in `unchecked`. */
export interface ConfigContext {
    /** The file name used in messages. */
    readonly file?: string;
    /** Data-parallel world size. Without it (and without nodeSizes) world-dependent rules are skipped. */
    readonly worldSize?: number;
    /** Ranks per node when nodes are uniform. */
    readonly gpusPerNode?: number;
    /** Ranks on each node, from a launch plan (may be uneven). Their sum is the world size when worldSize is not given. */
    readonly nodeSizes?: readonly number[];
    /** The model's hidden size: resolves Hugging Face "auto" bucket sizes. */
    readonly hiddenSize?: number;
    /**
     * The config is for mixz's engine (`mixz config check`, `mixz launch`): also apply the
     * engine-support rules (checkEngineSupport.ts: stage 3, no offload, an optimizer section).
     */
    readonly engine?: boolean;
}

export interface ConfigResult {
    readonly config: ResolvedConfig;
    /** Things that are accepted but deserve attention (ignored or deprecated keys, hpZ on one node). */
    readonly warnings: readonly Problem[];
    /** Rules that could not be checked for want of context, each naming the flag that would enable it. */
    readonly unchecked: readonly string[];
}

/** Codes of the warnings in ConfigResult.warnings. Add, never rename. */
export const ConfigWarningCodes = {
    /** A key DeepSpeed knows and mixz accepts but ignores. */
    ignoredKey: "MIXZ_WARN_IGNORED_KEY",
    /** A key DeepSpeed has deprecated. */
    deprecatedKey: "MIXZ_WARN_DEPRECATED_KEY",
    /** zero_hpz_partition_size > 1 while the whole world is one node. */
    hpzOneNode: "MIXZ_WARN_HPZ_ONE_NODE",
    /** An offload device other than "none": mixz does not offload yet. */
    noOffload: "MIXZ_WARN_NO_OFFLOAD"
} as const;

export type ConfigWarningCode = (typeof ConfigWarningCodes)[keyof typeof ConfigWarningCodes];

/** The entries of ConfigResult.unchecked (the batch entry may carry a suffix naming the implied world size). */
export const UncheckedRules = {
    batch: "batch arithmetic against the world size (pass --world-size)",
    hpzWorld: "zero_hpz_partition_size divides the world size (pass --world-size)",
    hpzNode: "zero_hpz_partition_size stays within one node (pass --gpus-per-node)"
} as const;

export type PrecisionName = "fp16" | "bf16" | "fp32";

/** A fully validated and defaulted DeepSpeed config. Every field is present. */
export interface ResolvedConfig {
    /** null only when the world size was unknown and the value depends on it. */
    readonly train_batch_size: number | null;
    /** null only when the world size was unknown and the value depends on it. */
    readonly train_micro_batch_size_per_gpu: number | null;
    /** null only when the world size was unknown and the value depends on it. */
    readonly gradient_accumulation_steps: number | null;
    readonly gradient_clipping: number;
    readonly communication_data_type: PrecisionName | null;
    readonly prescale_gradients: boolean;
    readonly gradient_predivide_factor: number;
    readonly steps_per_print: number;
    readonly wall_clock_breakdown: boolean;
    readonly zero_allow_untested_optimizer: boolean;
    readonly fp16: ResolvedFp16Config;
    /** Given as `bf16` or its alias `bfloat16`. */
    readonly bf16: ResolvedBf16Config;
    readonly data_types: ResolvedDataTypesConfig;
    /** null when the config names no optimizer. */
    readonly optimizer: ResolvedOptimizerConfig | null;
    /** null when the config names no scheduler. */
    readonly scheduler: ResolvedSchedulerConfig | null;
    readonly zero_optimization: ResolvedZeroConfig;
    readonly mixz: ResolvedMixzConfig;
}

export interface ResolvedFp16Config {
    readonly enabled: boolean;
    readonly auto_cast: boolean;
    /** 0: dynamic loss scaling. */
    readonly loss_scale: number;
    /** 32, window 1000, min 1, hysteresis 1 when the config gave no dynamic-scaler key; else 16, 1000, 1, 2 for missing ones. */
    readonly initial_scale_power: number;
    readonly loss_scale_window: number;
    readonly hysteresis: number;
    readonly consecutive_hysteresis: boolean;
    readonly min_loss_scale: number;
    readonly fp16_master_weights_and_grads: boolean;
}

export interface ResolvedBf16Config {
    readonly enabled: boolean;
    readonly immediate_grad_update: boolean;
}

export interface ResolvedDataTypesConfig {
    readonly grad_accum_dtype: PrecisionName | null;
}

/** Lower-cased DeepSpeed optimizer name. */
export type OptimizerType = "adam" | "adamw";

export interface ResolvedOptimizerConfig {
    readonly type: OptimizerType;
    readonly params: ResolvedAdamParams;
}

export interface ResolvedAdamParams {
    readonly lr: number;
    readonly betas: readonly [number, number];
    readonly eps: number;
    readonly weight_decay: number;
    readonly bias_correction: boolean;
    /** As in DeepSpeed: type "adam" runs AdamW unless this is false; "adamw" always does (see effectiveAdamWMode). */
    readonly adam_w_mode: boolean;
}

export type WarmupType = "log" | "linear";

export interface WarmupLRParams {
    readonly warmup_min_lr: number;
    readonly warmup_max_lr: number;
    readonly warmup_num_steps: number;
    readonly warmup_type: WarmupType;
    readonly last_batch_iteration: number;
}

export interface WarmupDecayLRParams extends WarmupLRParams {
    readonly total_num_steps: number;
}

export interface WarmupCosineLRParams {
    readonly total_num_steps: number;
    readonly warmup_min_ratio: number;
    readonly warmup_num_steps: number;
    readonly cos_min_ratio: number;
    readonly warmup_type: WarmupType;
    readonly last_batch_iteration: number;
}

export type ResolvedSchedulerConfig =
    | {readonly type: "WarmupLR"; readonly params: WarmupLRParams}
    | {readonly type: "WarmupDecayLR"; readonly params: WarmupDecayLRParams}
    | {readonly type: "WarmupCosineLR"; readonly params: WarmupCosineLRParams};

export type OffloadDevice = "none" | "cpu" | "nvme";

export interface ResolvedOffloadParamConfig {
    readonly device: OffloadDevice;
    readonly nvme_path: string | null;
    readonly pin_memory: boolean;
    readonly buffer_count: number;
    readonly buffer_size: number;
    readonly max_in_cpu: number;
}

export interface ResolvedOffloadOptimizerConfig {
    readonly device: OffloadDevice;
    readonly nvme_path: string | null;
    readonly pin_memory: boolean;
    readonly buffer_count: number;
    readonly pipeline_read: boolean;
    readonly pipeline_write: boolean;
    readonly fast_init: boolean;
    readonly ratio: number;
}

export interface ResolvedLocoParams {
    readonly err_beta: number;
    readonly reset_T: number;
}

/** zero_optimization with canonical names (aliases folded in, deprecated keys dropped). */
export interface ResolvedZeroConfig {
    readonly stage: 0 | 1 | 2 | 3;
    readonly contiguous_gradients: boolean;
    readonly reduce_scatter: boolean;
    readonly reduce_bucket_size: number;
    readonly allgather_partitions: boolean;
    readonly allgather_bucket_size: number;
    /** Resolved: null in the config means true for stage 3, false otherwise. */
    readonly overlap_comm: boolean;
    readonly load_from_fp32_weights: boolean;
    readonly use_multi_rank_bucket_allreduce: boolean;
    readonly sub_group_size: number;
    readonly stage3_prefetch_bucket_size: number;
    readonly stage3_param_persistence_threshold: number;
    readonly stage3_model_persistence_threshold: number;
    readonly stage3_max_live_parameters: number;
    readonly stage3_max_reuse_distance: number;
    readonly stage3_gather_16bit_weights_on_model_save: boolean;
    readonly stage3_module_granularity_threshold: number;
    readonly stage3_use_all_reduce_for_fetch_params: boolean;
    readonly zero_hpz_partition_size: number;
    readonly zero_quantized_weights: boolean;
    readonly zero_quantized_nontrainable_weights: boolean;
    readonly zero_quantized_gradients: boolean;
    readonly zeropp_loco_param: ResolvedLocoParams | null;
    readonly offload_param: ResolvedOffloadParamConfig | null;
    readonly offload_optimizer: ResolvedOffloadOptimizerConfig | null;
    readonly ignore_unused_parameters: boolean;
    readonly round_robin_gradients: boolean;
    readonly memory_efficient_linear: boolean;
    readonly override_module_apply: boolean;
    readonly log_trace_cache_warnings: boolean;
    readonly mics_shard_size: number;
    readonly mics_hierarchical_params_gather: boolean;
}

export interface ResolvedMixzConfig {
    /** Elements per qwZ/MixZ++ quantization block for the whole run: a power of two in [64, 65536]. */
    readonly quant_block_size: number;
    /** Where ranks compute (MIXZ_DEVICE overrides; the engine resolves "auto": train/computeDevice.ts). */
    readonly device: "cpu" | "cuda" | "auto";
}

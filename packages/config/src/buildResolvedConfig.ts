/**
 * Builds the ResolvedConfig from data that passed every check: only the keys ResolvedConfig
 * declares, in DeepSpeed's canonical names and a stable order, so that the result prints as a
 * DeepSpeed config. (Ignored and deprecated keys, "$schema" and optimizer.params.torch_adam are
 * left out: mixz does not act on them.) The key lists are checked against the schema by tests.
 */
import type {
    ResolvedAdamParams,
    ResolvedBf16Config,
    ResolvedConfig,
    ResolvedFp16Config,
    ResolvedOffloadOptimizerConfig,
    ResolvedOffloadParamConfig,
    ResolvedSchedulerConfig,
    ResolvedZeroConfig,
    WarmupCosineLRParams,
    WarmupDecayLRParams
} from "./api.js";
import {isPlainObject} from "./jsonPath.js";

export const topLevelKeys = [
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "communication_data_type",
    "prescale_gradients",
    "gradient_predivide_factor",
    "steps_per_print",
    "wall_clock_breakdown",
    "zero_allow_untested_optimizer",
    "fp16",
    "bf16",
    "data_types",
    "optimizer",
    "scheduler",
    "zero_optimization",
    "mixz"
] as const satisfies readonly (keyof ResolvedConfig)[];

export const fp16Keys = [
    "enabled",
    "auto_cast",
    "loss_scale",
    "initial_scale_power",
    "loss_scale_window",
    "hysteresis",
    "consecutive_hysteresis",
    "min_loss_scale",
    "fp16_master_weights_and_grads"
] as const satisfies readonly (keyof ResolvedFp16Config)[];

export const bf16Keys = ["enabled", "immediate_grad_update"] as const satisfies readonly (keyof ResolvedBf16Config)[];

export const adamKeys = ["lr", "betas", "eps", "weight_decay", "bias_correction", "adam_w_mode"] as const satisfies readonly (keyof ResolvedAdamParams)[];

export const schedulerKeys = {
    WarmupLR: ["warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "warmup_type", "last_batch_iteration"],
    WarmupDecayLR: ["total_num_steps", "warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "warmup_type", "last_batch_iteration"],
    WarmupCosineLR: ["total_num_steps", "warmup_min_ratio", "warmup_num_steps", "cos_min_ratio", "warmup_type", "last_batch_iteration"]
} as const satisfies {
    readonly WarmupLR: readonly (keyof WarmupDecayLRParams)[];
    readonly WarmupDecayLR: readonly (keyof WarmupDecayLRParams)[];
    readonly WarmupCosineLR: readonly (keyof WarmupCosineLRParams)[];
};

export const zeroKeys = [
    "stage",
    "contiguous_gradients",
    "reduce_scatter",
    "reduce_bucket_size",
    "allgather_partitions",
    "allgather_bucket_size",
    "overlap_comm",
    "load_from_fp32_weights",
    "use_multi_rank_bucket_allreduce",
    "sub_group_size",
    "stage3_prefetch_bucket_size",
    "stage3_param_persistence_threshold",
    "stage3_model_persistence_threshold",
    "stage3_max_live_parameters",
    "stage3_max_reuse_distance",
    "stage3_gather_16bit_weights_on_model_save",
    "stage3_module_granularity_threshold",
    "stage3_use_all_reduce_for_fetch_params",
    "zero_hpz_partition_size",
    "zero_quantized_weights",
    "zero_quantized_nontrainable_weights",
    "zero_quantized_gradients",
    "zeropp_loco_param",
    "offload_param",
    "offload_optimizer",
    "ignore_unused_parameters",
    "round_robin_gradients",
    "memory_efficient_linear",
    "override_module_apply",
    "log_trace_cache_warnings",
    "mics_shard_size",
    "mics_hierarchical_params_gather"
] as const satisfies readonly (keyof ResolvedZeroConfig)[];

export const offloadParamKeys = ["device", "nvme_path", "pin_memory", "buffer_count", "buffer_size", "max_in_cpu"] as const satisfies readonly (keyof ResolvedOffloadParamConfig)[];

export const offloadOptimizerKeys = [
    "device",
    "nvme_path",
    "pin_memory",
    "buffer_count",
    "pipeline_read",
    "pipeline_write",
    "fast_init",
    "ratio"
] as const satisfies readonly (keyof ResolvedOffloadOptimizerConfig)[];

/** `data` must have passed the schema, normalization, resolution and rules without problems. */
export function buildResolvedConfig(data: Record<string, unknown>): ResolvedConfig {
    const section = (value: unknown): Record<string, unknown> => (isPlainObject(value) ? value : {});
    const zero = section(data["zero_optimization"]);
    const optimizer = data["optimizer"];
    const scheduler = data["scheduler"];
    const nullable = (value: unknown, keys: readonly string[]): Record<string, unknown> | null =>
        isPlainObject(value) ? pick(value, keys) : null;

    const resolved = {
        ...pick(data, topLevelKeys.slice(0, 10)),
        fp16: pick(section(data["fp16"]), fp16Keys),
        bf16: pick(section(data["bf16"]), bf16Keys),
        data_types: pick(section(data["data_types"]), ["grad_accum_dtype"]),
        optimizer: isPlainObject(optimizer)
            ? {type: optimizer["type"], params: {...pick(section(optimizer["params"]), adamKeys), betas: [...(section(optimizer["params"])["betas"] as number[])]}}
            : null,
        scheduler: isPlainObject(scheduler)
            ? {type: scheduler["type"], params: pick(section(scheduler["params"]), schedulerKeys[scheduler["type"] as ResolvedSchedulerConfig["type"]])}
            : null,
        zero_optimization: {
            ...pick(zero, zeroKeys),
            zeropp_loco_param: nullable(zero["zeropp_loco_param"], ["err_beta", "reset_T"]),
            offload_param: nullable(zero["offload_param"], offloadParamKeys),
            offload_optimizer: nullable(zero["offload_optimizer"], offloadOptimizerKeys)
        },
        mixz: pick(section(data["mixz"]), ["quant_block_size", "device"])
    };
    // Trusted: every value was validated against the schema and the rules above.
    return resolved as unknown as ResolvedConfig;
}

function pick(source: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const key of keys) out[key] = source[key];
    return out;
}

/** Defaults, aliases, "auto" values and warnings: the pipeline end to end. */
import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {ErrorCodes} from "@mixz/protocol";
import {
    ConfigWarningCodes,
    type ResolvedConfig,
    effectiveAdamWMode,
    resolveConfigObject,
    resolveConfigText
} from "@mixz/config";
import {configText, problemAt, problemOf, problemsOf} from "./helpers.js";

const base = {train_micro_batch_size_per_gpu: 2} as const;

describe("defaults", () => {
    it("fills every default into a minimal config", () => {
        const {config, warnings, unchecked} = resolveConfigText(configText(), {worldSize: 4});
        const expected: ResolvedConfig = {
            train_batch_size: 4,
            train_micro_batch_size_per_gpu: 1,
            gradient_accumulation_steps: 1,
            gradient_clipping: 0,
            communication_data_type: null,
            prescale_gradients: false,
            gradient_predivide_factor: 1,
            steps_per_print: 10,
            wall_clock_breakdown: false,
            zero_allow_untested_optimizer: false,
            fp16: {
                enabled: false,
                auto_cast: false,
                loss_scale: 0,
                initial_scale_power: 32,
                loss_scale_window: 1000,
                hysteresis: 1,
                consecutive_hysteresis: false,
                min_loss_scale: 1,
                fp16_master_weights_and_grads: false
            },
            bf16: {enabled: false, immediate_grad_update: false},
            data_types: {grad_accum_dtype: null},
            optimizer: null,
            scheduler: null,
            zero_optimization: {
                stage: 0,
                contiguous_gradients: true,
                reduce_scatter: true,
                reduce_bucket_size: 500_000_000,
                allgather_partitions: true,
                allgather_bucket_size: 500_000_000,
                overlap_comm: false,
                load_from_fp32_weights: true,
                use_multi_rank_bucket_allreduce: true,
                sub_group_size: 1_000_000_000,
                stage3_prefetch_bucket_size: 50_000_000,
                stage3_param_persistence_threshold: 100_000,
                stage3_model_persistence_threshold: Number.MAX_SAFE_INTEGER,
                stage3_max_live_parameters: 1_000_000_000,
                stage3_max_reuse_distance: 1_000_000_000,
                stage3_gather_16bit_weights_on_model_save: false,
                stage3_module_granularity_threshold: 0,
                stage3_use_all_reduce_for_fetch_params: false,
                zero_hpz_partition_size: 1,
                zero_quantized_weights: false,
                zero_quantized_nontrainable_weights: false,
                zero_quantized_gradients: false,
                zeropp_loco_param: null,
                offload_param: null,
                offload_optimizer: null,
                ignore_unused_parameters: true,
                round_robin_gradients: false,
                memory_efficient_linear: true,
                override_module_apply: true,
                log_trace_cache_warnings: false,
                mics_shard_size: -1,
                mics_hierarchical_params_gather: false
            },
            mixz: {quant_block_size: 4096, device: "auto"}
        };
        assert.deepEqual(config, expected);
        assert.deepEqual(Object.keys(config), Object.keys(expected));
        assert.deepEqual(Object.keys(config.zero_optimization), Object.keys(expected.zero_optimization));
        assert.deepEqual(warnings, []);
        assert.deepEqual(unchecked, []);
    });

    it("fills optimizer and scheduler parameters by type", () => {
        const {config} = resolveConfigObject({...base, optimizer: {type: "Adam"}, scheduler: {type: "WarmupLR"}}, {worldSize: 1});
        assert.deepEqual(config.optimizer, {
            type: "adam",
            params: {lr: 0.001, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0, bias_correction: true, adam_w_mode: true}
        });
        assert.deepEqual(config.scheduler, {
            type: "WarmupLR",
            params: {warmup_min_lr: 0, warmup_max_lr: 0.001, warmup_num_steps: 1000, warmup_type: "log", last_batch_iteration: -1}
        });
        const decay = resolveConfigObject({...base, scheduler: {type: "WarmupDecayLR", params: {total_num_steps: 500}}}).config.scheduler;
        assert.deepEqual(decay, {
            type: "WarmupDecayLR",
            params: {total_num_steps: 500, warmup_min_lr: 0, warmup_max_lr: 0.001, warmup_num_steps: 1000, warmup_type: "log", last_batch_iteration: -1}
        });
        const cosine = resolveConfigObject({...base, scheduler: {type: "WarmupCosineLR", params: {total_num_steps: 500}}}).config.scheduler;
        assert.deepEqual(cosine, {
            type: "WarmupCosineLR",
            params: {total_num_steps: 500, warmup_min_ratio: 0, warmup_num_steps: 1000, cos_min_ratio: 0.0001, warmup_type: "log", last_batch_iteration: -1}
        });
    });

    it("fills offload and LoCo sections only when given", () => {
        const {config} = resolveConfigObject({
            ...base,
            zero_optimization: {stage: 3, offload_param: {}, offload_optimizer: {device: "none"}, zeropp_loco_param: {}}
        });
        assert.deepEqual(config.zero_optimization.offload_param, {device: "none", nvme_path: null, pin_memory: false, buffer_count: 5, buffer_size: 100_000_000, max_in_cpu: 1_000_000_000});
        assert.deepEqual(config.zero_optimization.offload_optimizer, {
            device: "none",
            nvme_path: null,
            pin_memory: false,
            buffer_count: 4,
            pipeline_read: false,
            pipeline_write: false,
            fast_init: false,
            ratio: 1
        });
        assert.deepEqual(config.zero_optimization.zeropp_loco_param, {err_beta: 0.8, reset_T: 1024});
    });

    const overlap: readonly [number, boolean | null | undefined, boolean][] = [
        [0, undefined, false],
        [1, undefined, false],
        [2, undefined, false],
        [3, undefined, true],
        [3, null, true],
        [2, null, false],
        [3, false, false],
        [1, true, true]
    ];
    for (const [stage, given, expected] of overlap) {
        it(`overlap_comm ${String(given)} with stage ${stage} → ${expected}`, () => {
            const zero = given === undefined ? {stage} : {stage, overlap_comm: given};
            assert.equal(resolveConfigObject({...base, zero_optimization: zero}).config.zero_optimization.overlap_comm, expected);
        });
    }

    const scaler: readonly {name: string; fp16: Record<string, unknown>; expected: Record<string, unknown>}[] = [
        {
            name: "no dynamic-scaler key: the scaler's own defaults (2^32, hysteresis 1)",
            fp16: {enabled: true},
            expected: {initial_scale_power: 32, loss_scale_window: 1000, min_loss_scale: 1, hysteresis: 1, consecutive_hysteresis: false}
        },
        {
            name: "one key (loss_scale_window): DeepSpeed's config defaults (2^16, hysteresis 2)",
            fp16: {enabled: true, loss_scale_window: 100},
            expected: {initial_scale_power: 16, loss_scale_window: 100, min_loss_scale: 1, hysteresis: 2, consecutive_hysteresis: false}
        },
        {
            name: "consecutive_hysteresis false counts as present",
            fp16: {enabled: true, consecutive_hysteresis: false},
            expected: {initial_scale_power: 16, loss_scale_window: 1000, min_loss_scale: 1, hysteresis: 2, consecutive_hysteresis: false}
        },
        {
            name: "min_loss_scale alone",
            fp16: {min_loss_scale: 0.5},
            expected: {initial_scale_power: 16, loss_scale_window: 1000, min_loss_scale: 0.5, hysteresis: 2, consecutive_hysteresis: false}
        },
        {
            name: "all given",
            fp16: {initial_scale_power: 12, loss_scale_window: 50, min_loss_scale: 2, hysteresis: 3, consecutive_hysteresis: true},
            expected: {initial_scale_power: 12, loss_scale_window: 50, min_loss_scale: 2, hysteresis: 3, consecutive_hysteresis: true}
        },
        {
            name: "loss_scale is not a dynamic-scaler key",
            fp16: {enabled: true, loss_scale: 128},
            expected: {loss_scale: 128, initial_scale_power: 32, hysteresis: 1}
        }
    ];
    for (const {name, fp16, expected} of scaler) {
        it(`fp16 loss scaler: ${name}`, () => {
            const {config} = resolveConfigObject({...base, fp16});
            for (const [key, value] of Object.entries(expected)) {
                assert.equal(config.fp16[key as keyof typeof config.fp16], value, key);
            }
        });
    }

    it("takes bf16 from its alias bfloat16", () => {
        const {config} = resolveConfigText(configText('"bfloat16": {"enabled": true}'));
        assert.deepEqual(config.bf16, {enabled: true, immediate_grad_update: false});
        assert.equal("bfloat16" in config, false);
    });

    it("leaves out $schema, ignored keys, deprecated keys and torch_adam", () => {
        const {config} = resolveConfigObject({
            $schema: "./ds_config.schema.json",
            ...base,
            wandb: {enabled: true},
            optimizer: {type: "AdamW", params: {torch_adam: true}},
            zero_optimization: {stage: 3, cpu_offload: false}
        });
        assert.equal("$schema" in config, false);
        assert.equal("wandb" in config, false);
        assert.equal("torch_adam" in (config.optimizer?.params ?? {}), false);
        assert.equal("cpu_offload" in config.zero_optimization, false);
    });

    it("prints back as a config that resolves to itself", () => {
        const text = configText(
            '"fp16": {"enabled": true, "loss_scale_window": 100}, "optimizer": {"type": "Adam", "params": {"adam_w_mode": false}}, ' +
                '"scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": 10}}, ' +
                '"zero_optimization": {"stage": 3, "prefetch_bucket_size": 1000, "zero_hpz_partition_size": 2, "offload_param": {"device": "none"}}'
        );
        const first = resolveConfigText(text, {worldSize: 4, gpusPerNode: 2});
        const second = resolveConfigText(JSON.stringify(first.config), {worldSize: 4, gpusPerNode: 2});
        assert.deepEqual(second.config, first.config);
    });

    it("does not modify a programmatic config", () => {
        const input = {...base, zero_optimization: {stage: 3, max_live_parameters: 5}};
        const copy = structuredClone(input);
        resolveConfigObject(input);
        assert.deepEqual(input, copy);
    });

    it("rejects a cyclic programmatic config", () => {
        const zero: Record<string, unknown> = {stage: 3};
        zero["self"] = zero;
        const problem = problemOf(() => resolveConfigObject({...base, zero_optimization: zero}));
        assert.equal(problem.code, ErrorCodes.configInvalidValue);
        assert.equal(problem.path, "zero_optimization.self");
    });

    it("reports programmatic problems with paths and no positions", () => {
        const problem = problemOf(() => resolveConfigObject({...base, zero_optimization: {stage: 7}}));
        assert.equal(problem.code, ErrorCodes.configInvalidValue);
        assert.equal(problem.path, "zero_optimization.stage");
        assert.equal(problem.line, undefined);
        assert.equal(problem.file, undefined);
    });
});

describe("optimizer type", () => {
    const cases: readonly [string, boolean | undefined, boolean][] = [
        ["Adam", undefined, true], // DeepSpeed: Adam runs AdamW unless adam_w_mode is false
        ["Adam", false, false],
        ["Adam", true, true],
        ["AdamW", undefined, true],
        ["AdamW", false, true] // the name AdamW wins
    ];
    for (const [type, mode, expected] of cases) {
        it(`${type} with adam_w_mode ${String(mode)} → AdamW ${expected}`, () => {
            const params = mode === undefined ? {} : {adam_w_mode: mode};
            const optimizer = resolveConfigObject({...base, optimizer: {type, params}}).config.optimizer;
            assert.ok(optimizer);
            assert.equal(optimizer.type, type.toLowerCase());
            assert.equal(optimizer.params.adam_w_mode, mode ?? true);
            assert.equal(effectiveAdamWMode(optimizer), expected);
        });
    }
});

describe("aliases", () => {
    const zeroAliases: readonly [string, string, unknown][] = [
        ["prefetch_bucket_size", "stage3_prefetch_bucket_size", 1234],
        ["param_persistence_threshold", "stage3_param_persistence_threshold", 99],
        ["model_persistence_threshold", "stage3_model_persistence_threshold", 77],
        ["max_live_parameters", "stage3_max_live_parameters", 3e7],
        ["max_reuse_distance", "stage3_max_reuse_distance", 5],
        ["gather_16bit_weights_on_model_save", "stage3_gather_16bit_weights_on_model_save", true],
        ["stage3_gather_fp16_weights_on_model_save", "stage3_gather_16bit_weights_on_model_save", true],
        ["module_granularity_threshold", "stage3_module_granularity_threshold", 10],
        ["use_all_reduce_for_fetch_params", "stage3_use_all_reduce_for_fetch_params", true]
    ];
    for (const [alias, canonical, value] of zeroAliases) {
        it(`${alias} alone → ${canonical}`, () => {
            const {config} = resolveConfigObject({...base, zero_optimization: {stage: 3, [alias]: value}});
            const zero = config.zero_optimization as unknown as Record<string, unknown>;
            assert.equal(zero[canonical], value);
            assert.equal(alias in zero && alias !== canonical, false);
        });

        it(`${alias} together with ${canonical} → conflict at the later key`, () => {
            const text = `{"train_micro_batch_size_per_gpu": 1, "zero_optimization": {\n  "${canonical}": ${JSON.stringify(value)},\n  "${alias}": ${JSON.stringify(value)}\n}}`;
            const problem = problemOf(() => resolveConfigText(text, {file: "ds.json"}));
            assert.equal(problem.code, ErrorCodes.configConflict);
            assert.equal(problem.path, `zero_optimization.${alias}`);
            assert.deepEqual([problem.line, problem.column], [3, 3]);
            assert.match(problem.message, new RegExp(`"${alias}" is another name of "${canonical}"; give only one of them \\("${canonical}" is at line 2\\)`));
        });
    }

    it("reports two aliases of one setting", () => {
        const text = configText('"zero_optimization": {"gather_16bit_weights_on_model_save": true, "stage3_gather_fp16_weights_on_model_save": true}');
        const problem = problemOf(() => resolveConfigText(text));
        assert.equal(problem.code, ErrorCodes.configConflict);
        assert.equal(problem.path, "zero_optimization.stage3_gather_fp16_weights_on_model_save");
        assert.match(problem.message, /are both names of "stage3_gather_16bit_weights_on_model_save"/);
    });

    it("reports bf16 together with bfloat16", () => {
        const text = '{"train_micro_batch_size_per_gpu": 1,\n "bfloat16": {"enabled": true},\n "bf16": {"enabled": true}}';
        const problem = problemOf(() => resolveConfigText(text));
        assert.equal(problem.code, ErrorCodes.configConflict);
        assert.equal(problem.path, "bf16");
        assert.deepEqual([problem.line, problem.column], [3, 2]);
        assert.match(problem.message, /"bfloat16" is another name of "bf16"; give only one of them \("bfloat16" is at line 2\)/);
    });

    it("names the alias the user wrote in later problems", () => {
        const text = '{"train_micro_batch_size_per_gpu": 1,\n "fp16": {"enabled": true},\n "bfloat16": {"enabled": true}}';
        const problem = problemOf(() => resolveConfigText(text));
        assert.equal(problem.code, ErrorCodes.configConflict);
        assert.equal(problem.path, "bfloat16.enabled");
        assert.deepEqual([problem.line, problem.column], [3, 26]);
    });

    it("locates an unresolved auto under an alias", () => {
        const text = '{"train_micro_batch_size_per_gpu": 1,\n "zero_optimization": {"prefetch_bucket_size": "auto"}}';
        const problem = problemOf(() => resolveConfigText(text));
        assert.equal(problem.code, ErrorCodes.configUnresolvedAuto);
        assert.equal(problem.path, "zero_optimization.prefetch_bucket_size");
        assert.deepEqual([problem.line, problem.column], [2, 48]);
    });
});

describe("auto", () => {
    it("resolves bucket sizes from the hidden size (Hugging Face's rule)", () => {
        const text = configText(
            '"zero_optimization": {"stage": 3, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto"}'
        );
        const zero = resolveConfigText(text, {hiddenSize: 4096}).config.zero_optimization;
        assert.equal(zero.reduce_bucket_size, 4096 * 4096);
        assert.equal(zero.stage3_prefetch_bucket_size, 15_099_494); // ⌊0.9 · 4096²⌋
        assert.equal(zero.stage3_param_persistence_threshold, 40_960);
        const odd = resolveConfigText(text, {hiddenSize: 1}).config.zero_optimization;
        assert.deepEqual([odd.reduce_bucket_size, odd.stage3_prefetch_bucket_size, odd.stage3_param_persistence_threshold], [1, 0, 10]);
    });

    it("resolves the alias prefetch_bucket_size: auto", () => {
        const text = configText('"zero_optimization": {"prefetch_bucket_size": "auto", "param_persistence_threshold": "auto"}');
        const zero = resolveConfigText(text, {hiddenSize: 100}).config.zero_optimization;
        assert.equal(zero.stage3_prefetch_bucket_size, 9000);
        assert.equal(zero.stage3_param_persistence_threshold, 1000);
    });

    it("needs the hidden size for every auto bucket, each reported", () => {
        const text = '{"train_micro_batch_size_per_gpu": 1, "zero_optimization": {\n  "reduce_bucket_size": "auto",\n  "stage3_prefetch_bucket_size": "auto",\n  "stage3_param_persistence_threshold": "auto"}}';
        const problems = problemsOf(() => resolveConfigText(text, {file: "ds.json"}));
        assert.deepEqual(
            problems.map((p) => [p.code, p.path, p.line, p.column]),
            [
                [ErrorCodes.configUnresolvedAuto, "zero_optimization.reduce_bucket_size", 2, 25],
                [ErrorCodes.configUnresolvedAuto, "zero_optimization.stage3_prefetch_bucket_size", 3, 34],
                [ErrorCodes.configUnresolvedAuto, "zero_optimization.stage3_param_persistence_threshold", 4, 41]
            ]
        );
        assert.equal(problems[0]!.message, "\"auto\" needs the model's hidden size: pass --hidden-size or give a number");
    });

    const unresolvable: readonly [string, string, RegExp][] = [
        ["gradient_clipping", '"gradient_clipping": "auto"', /give a number \(0 turns clipping off\)$/],
        ["fp16.enabled", '"fp16": {"enabled": "auto"}', /give true or false$/],
        ["bf16.enabled", '"bf16": {"enabled": "auto"}', /give true or false$/],
        ["bfloat16.enabled", '"bfloat16": {"enabled": "auto"}', /give true or false$/],
        ["optimizer.params.lr", '"optimizer": {"type": "AdamW", "params": {"lr": "auto"}}', /give a number$/],
        ["optimizer.params.betas", '"optimizer": {"type": "AdamW", "params": {"betas": "auto"}}', /give two numbers/],
        ["optimizer.params.eps", '"optimizer": {"type": "AdamW", "params": {"eps": "auto"}}', /give a number$/],
        ["optimizer.params.weight_decay", '"optimizer": {"type": "AdamW", "params": {"weight_decay": "auto"}}', /give a number$/],
        ["scheduler.params.warmup_max_lr", '"scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": "auto"}}', /give a number$/],
        ["scheduler.params.total_num_steps", '"scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": "auto"}}', /give a number$/]
    ];
    for (const [path, member, message] of unresolvable) {
        it(`cannot resolve "auto" at ${path}`, () => {
            const problem = problemOf(() => resolveConfigText(configText(member), {hiddenSize: 64, worldSize: 1}));
            assert.equal(problem.code, ErrorCodes.configUnresolvedAuto);
            assert.equal(problem.path, path);
            assert.equal(problem.line, 1);
            assert.match(problem.message, /^"auto" is filled in by the Hugging Face Trainer/);
            assert.match(problem.message, message);
        });
    }

    it("reports every unresolvable auto of a Hugging Face config", () => {
        const hf = {
            fp16: {enabled: "auto", loss_scale: 0, loss_scale_window: 1000, initial_scale_power: 16, hysteresis: 2, min_loss_scale: 1},
            bf16: {enabled: "auto"},
            optimizer: {type: "AdamW", params: {lr: "auto", betas: "auto", eps: "auto", weight_decay: "auto"}},
            scheduler: {type: "WarmupDecayLR", params: {warmup_min_lr: "auto", warmup_max_lr: "auto", warmup_num_steps: "auto", total_num_steps: "auto"}},
            zero_optimization: {
                stage: 3,
                overlap_comm: true,
                contiguous_gradients: true,
                sub_group_size: 1e9,
                reduce_bucket_size: "auto",
                stage3_prefetch_bucket_size: "auto",
                stage3_param_persistence_threshold: "auto",
                stage3_max_live_parameters: 1e9,
                stage3_max_reuse_distance: 1e9,
                stage3_gather_16bit_weights_on_model_save: true
            },
            gradient_accumulation_steps: "auto",
            gradient_clipping: "auto",
            steps_per_print: 2000,
            train_batch_size: "auto",
            train_micro_batch_size_per_gpu: "auto",
            wall_clock_breakdown: false
        };
        const problems = problemsOf(() => resolveConfigObject(hf, {hiddenSize: 1024, worldSize: 8}));
        assert.deepEqual(
            problems.map((p) => p.path).sort(),
            [
                "bf16.enabled",
                "fp16.enabled",
                "gradient_clipping",
                "optimizer.params.betas",
                "optimizer.params.eps",
                "optimizer.params.lr",
                "optimizer.params.weight_decay",
                "scheduler.params.total_num_steps",
                "scheduler.params.warmup_max_lr",
                "scheduler.params.warmup_min_lr",
                "scheduler.params.warmup_num_steps",
                "train_batch_size"
            ]
        );
        for (const problem of problems) assert.equal(problem.code, ErrorCodes.configUnresolvedAuto);
        assert.match(problemAt(problems, "train_batch_size").message, /give train_batch_size or train_micro_batch_size_per_gpu a number/);
    });
});

describe("warnings", () => {
    const ignored = [
        "activation_checkpointing",
        "tensorboard",
        "wandb",
        "csv_monitor",
        "comet",
        "flops_profiler",
        "comms_logger",
        "amp",
        "aio",
        "checkpoint",
        "elasticity",
        "memory_breakdown",
        "dump_state",
        "sparse_gradients",
        "zero_force_ds_cpu_optimizer",
        "dataloader_drop_last",
        "compression_training",
        "data_efficiency",
        "curriculum_learning",
        "autotuning",
        "pipeline",
        "sparse_attention",
        "torch_autocast",
        "weight_quantization",
        "hybrid_engine",
        "nebula",
        "seq_parallel_communication_data_type",
        "graph_harvesting",
        "use_node_local_storage",
        "disable_allgather"
    ];
    for (const key of ignored) {
        it(`accepts and ignores ${key}, with a warning at its key`, () => {
            const text = `{"train_micro_batch_size_per_gpu": 1,\n  "${key}": {"enabled": "auto", "anything": [1, 2]}}`;
            const {warnings} = resolveConfigText(text, {file: "ds.json"});
            assert.deepEqual(warnings, [
                {
                    code: ConfigWarningCodes.ignoredKey,
                    message: `"${key}" is accepted for DeepSpeed compatibility and ignored by mixz`,
                    file: "ds.json",
                    line: 2,
                    column: 3,
                    path: key
                }
            ]);
        });
    }

    it("accepts ignored keys with any type of value", () => {
        for (const value of [true, 3, "x", null, [], {}]) {
            assert.equal(resolveConfigObject({...base, memory_breakdown: value}).warnings.length, 1);
        }
    });

    const deprecated: readonly [string, unknown, RegExp][] = [
        ["cpu_offload", true, /"cpu_offload" is deprecated by DeepSpeed \(use offload_optimizer\) and ignored by mixz/],
        ["cpu_offload_param", false, /\(use offload_param\)/],
        ["cpu_offload_use_pin_memory", null, /pin_memory/],
        ["elastic_checkpoint", true, /"elastic_checkpoint" is deprecated by DeepSpeed and ignored by mixz/],
        ["legacy_stage1", false, /"legacy_stage1" is deprecated/],
        ["pipeline_loading_checkpoint", false, /"pipeline_loading_checkpoint" is deprecated/],
        ["stage3_gather_fp16_weights_on_model_save", true, /write "stage3_gather_16bit_weights_on_model_save"/]
    ];
    for (const [key, value, message] of deprecated) {
        it(`warns that zero_optimization.${key} is deprecated`, () => {
            const text = `{"train_micro_batch_size_per_gpu": 1, "zero_optimization": {\n    "${key}": ${JSON.stringify(value)}}}`;
            const {warnings} = resolveConfigText(text);
            assert.equal(warnings.length, 1);
            assert.equal(warnings[0]!.code, ConfigWarningCodes.deprecatedKey);
            assert.equal(warnings[0]!.path, `zero_optimization.${key}`);
            assert.deepEqual([warnings[0]!.line, warnings[0]!.column], [2, 5]);
            assert.match(warnings[0]!.message, message);
        });
    }

    it("warns about torch_adam", () => {
        const {warnings} = resolveConfigObject({...base, optimizer: {type: "Adam", params: {torch_adam: true}}});
        assert.deepEqual(
            warnings.map((w) => [w.code, w.path]),
            [[ConfigWarningCodes.ignoredKey, "optimizer.params.torch_adam"]]
        );
    });

    it("warns that mixz does not offload", () => {
        const text = configText('"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}, "offload_optimizer": {"device": "nvme", "nvme_path": "/nvme"}}');
        const {warnings} = resolveConfigText(text);
        assert.deepEqual(
            warnings.map((w) => [w.code, w.path, w.column]),
            [
                [ConfigWarningCodes.noOffload, "zero_optimization.offload_param.device", text.indexOf('"cpu"') + 1],
                [ConfigWarningCodes.noOffload, "zero_optimization.offload_optimizer.device", text.indexOf('"nvme"') + 1]
            ]
        );
        assert.match(warnings[0]!.message, /mixz does not offload yet: parameters stay in accelerator memory/);
    });

    it("lists warnings in document order", () => {
        const text = [
            "{",
            '  "train_micro_batch_size_per_gpu": 1,',
            '  "zero_optimization": {"stage": 3, "cpu_offload": true, "offload_param": {"device": "cpu"}},',
            '  "wandb": {"enabled": true},',
            '  "activation_checkpointing": {}',
            "}"
        ].join("\n");
        const {warnings} = resolveConfigText(text);
        assert.deepEqual(
            warnings.map((w) => [w.code, w.path, w.line]),
            [
                [ConfigWarningCodes.deprecatedKey, "zero_optimization.cpu_offload", 3],
                [ConfigWarningCodes.noOffload, "zero_optimization.offload_param.device", 3],
                [ConfigWarningCodes.ignoredKey, "wandb", 4],
                [ConfigWarningCodes.ignoredKey, "activation_checkpointing", 5]
            ]
        );
    });

    it("does not warn about offload device none", () => {
        const {warnings} = resolveConfigObject({...base, zero_optimization: {offload_param: {device: "none"}}});
        assert.deepEqual(warnings, []);
    });

    it("throws only the errors when there are errors", () => {
        const problems = problemsOf(() => resolveConfigObject({wandb: {}, zero_optimization: {stage: 9}}));
        assert.deepEqual(
            problems.map((p) => p.code),
            [ErrorCodes.configInvalidValue, ErrorCodes.configConflict]
        );
    });
});

describe("context", () => {
    const invalid: readonly [string, object][] = [
        ["worldSize", {worldSize: 0}],
        ["worldSize", {worldSize: 2.5}],
        ["gpusPerNode", {gpusPerNode: -1}],
        ["hiddenSize", {hiddenSize: Number.NaN}],
        ["nodeSizes", {nodeSizes: []}],
        ["nodeSizes[1]", {nodeSizes: [2, 0]}],
        ["worldSize", {worldSize: 8, nodeSizes: [4, 2]}]
    ];
    for (const [path, context] of invalid) {
        it(`rejects ${JSON.stringify(context)}`, () => {
            const problem = problemOf(() => resolveConfigObject(base, context));
            assert.equal(problem.code, ErrorCodes.usage);
            assert.equal(problem.path, path);
        });
    }

    it("derives the world size from the node sizes", () => {
        const {config} = resolveConfigObject(base, {nodeSizes: [4, 2]});
        assert.equal(config.train_batch_size, 12);
    });
});

/** The JSON Schema pass as the user sees it: one problem per mistake, with code, path and position. */
import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {ErrorCodes} from "@mixz/protocol";
import {resolveConfigObject, resolveConfigText} from "@mixz/config";
import {problemAt, problemOf, problemsOf} from "./helpers.js";

/** The column at which `at` starts in line 2 of doc(member) (`at` occurs once in `member`). */
function columnOf(member: string, at: string): number {
    assert.equal(member.split(at).length, 2, `${at} must occur once in ${member}`);
    return member.indexOf(at) + 3;
}

/** A two-line config: line 1 holds the batch size, line 2 the member under test at column 3. */
function doc(member: string): string {
    return `{"train_micro_batch_size_per_gpu": 1,\n  ${member}}`;
}

describe("schema: unknown keys", () => {
    const cases: readonly {member: string; path: string; at: string; message: string}[] = [
        {member: '"train_batch_sizes": 8', path: "train_batch_sizes", at: '"train_batch_sizes"', message: 'unknown key "train_batch_sizes"; did you mean "train_batch_size"?'},
        {member: '"stage": 3', path: "stage", at: '"stage"', message: 'unknown key "stage"; did you mean "zero_optimization.stage"?'},
        {member: '"unrelated_key_xyz": 1', path: "unrelated_key_xyz", at: '"unrelated', message: 'unknown key "unrelated_key_xyz"'},
        {member: '"foo": 1', path: "foo", at: '"foo"', message: 'unknown key "foo"; did you mean "aio"?'}, // short names: distance 2 is close enough
        {
            member: '"zero_optimization": {"stage3_prefetch_bucketsize": 5e7}',
            path: "zero_optimization.stage3_prefetch_bucketsize",
            at: '"stage3_prefetch_bucketsize"',
            message: 'unknown key "stage3_prefetch_bucketsize"; did you mean "stage3_prefetch_bucket_size"?'
        },
        {
            member: '"zero_optimization": {"prefetch_bucketsize": 5e7}',
            path: "zero_optimization.prefetch_bucketsize",
            at: '"prefetch_bucketsize"',
            message: 'unknown key "prefetch_bucketsize"; did you mean "prefetch_bucket_size"?'
        },
        {
            member: '"zero_optimization": {"hpz_partition_size": 8}',
            path: "zero_optimization.hpz_partition_size",
            at: '"hpz_partition_size"',
            message: 'unknown key "hpz_partition_size"; did you mean "zero_hpz_partition_size"?'
        },
        {member: '"fp16": {"enable": true}', path: "fp16.enable", at: '"enable"', message: 'unknown key "enable"; did you mean "enabled"?'},
        {member: '"bfloat16": {"enable": true}', path: "bfloat16.enable", at: '"enable"', message: 'unknown key "enable"; did you mean "enabled"?'},
        {member: '"optimizer": {"type": "AdamW", "param": {}}', path: "optimizer.param", at: '"param"', message: 'unknown key "param"; did you mean "params"?'},
        {
            member: '"optimizer": {"type": "AdamW", "params": {"lr": 1, "amsgrad": true}}',
            path: "optimizer.params.amsgrad",
            at: '"amsgrad"',
            message: 'unknown key "amsgrad"'
        },
        {
            member: '"scheduler": {"type": "WarmupLR", "params": {"total_num_steps": 10}}',
            path: "scheduler.params.total_num_steps",
            at: '"total_num_steps"',
            message: 'unknown key "total_num_steps" (a parameter of WarmupDecayLR and WarmupCosineLR, not of WarmupLR)'
        },
        {
            member: '"scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": 10, "warmup_max_lr": 1}}',
            path: "scheduler.params.warmup_max_lr",
            at: '"warmup_max_lr"',
            message: 'unknown key "warmup_max_lr" (a parameter of WarmupLR and WarmupDecayLR, not of WarmupCosineLR)'
        },
        {
            member: '"zero_optimization": {"offload_param": {"device": "cpu", "pin_memry": true}}',
            path: "zero_optimization.offload_param.pin_memry",
            at: '"pin_memry"',
            message: 'unknown key "pin_memry"; did you mean "pin_memory"?'
        },
        {member: '"mixz": {"block_size": 64}', path: "mixz.block_size", at: '"block_size"', message: 'unknown key "block_size"'},
        {member: '"__proto__": {}', path: "__proto__", at: '"__proto__"', message: 'unknown key "__proto__"'}
    ];
    for (const {member, path, at, message} of cases) {
        it(path, () => {
            const column = columnOf(member, at);
            const problem = problemOf(() => resolveConfigText(doc(member), {file: "ds.json"}));
            assert.equal(problem.code, ErrorCodes.configUnknownKey);
            assert.equal(problem.path, path);
            assert.equal(problem.file, "ds.json");
            assert.deepEqual([problem.line, problem.column], [2, column]);
            assert.equal(problem.message, message);
        });
    }
});

describe("schema: wrong values", () => {
    const cases: readonly {member: string; path: string; at: string; message: string}[] = [
        {member: '"train_batch_size": "lots"', path: "train_batch_size", at: '"lots"', message: 'expected an integer ≥ 1 or "auto", got "lots"'},
        {member: '"train_batch_size": 0', path: "train_batch_size", at: '0', message: 'expected an integer ≥ 1 or "auto", got 0'},
        {member: '"gradient_accumulation_steps": 2.5', path: "gradient_accumulation_steps", at: '2.5', message: 'expected an integer ≥ 1 or "auto", got 2.5'},
        {member: '"gradient_clipping": -1', path: "gradient_clipping", at: '-1', message: 'expected a number ≥ 0 or "auto", got -1'},
        {member: '"steps_per_print": 0', path: "steps_per_print", at: '0', message: "expected an integer ≥ 1, got 0"},
        {member: '"prescale_gradients": "no"', path: "prescale_gradients", at: '"no"', message: 'expected true or false, got "no"'},
        {member: '"communication_data_type": "fp8"', path: "communication_data_type", at: '"fp8"', message: 'expected null, "fp16", "bf16" or "fp32", got "fp8"; did you mean "fp16"?'},
        {member: '"communication_data_type": "FP16"', path: "communication_data_type", at: '"FP16"', message: 'expected null, "fp16", "bf16" or "fp32", got "FP16"; did you mean "fp16"?'},
        {member: '"fp16": true', path: "fp16", at: 'true', message: "expected an object, got true"},
        {member: '"fp16": {"enabled": "yes"}', path: "fp16.enabled", at: '"yes"', message: 'expected true, false or "auto", got "yes"'},
        {member: '"fp16": {"loss_scale_window": 100.5}', path: "fp16.loss_scale_window", at: '100.5', message: "expected an integer ≥ 1, got 100.5"},
        {member: '"fp16": {"min_loss_scale": 0}', path: "fp16.min_loss_scale", at: '0', message: "expected a number > 0, got 0"},
        {member: '"bf16": {"enabled": 1}', path: "bf16.enabled", at: '1}', message: 'expected true, false or "auto", got 1'},
        {member: '"data_types": {"grad_accum_dtype": "fp64"}', path: "data_types.grad_accum_dtype", at: '"fp64"', message: 'expected null, "fp32", "fp16" or "bf16", got "fp64"; did you mean "fp32"?'},
        {member: '"zero_optimization": {"stage": 4}', path: "zero_optimization.stage", at: '4', message: "expected 0, 1, 2 or 3, got 4"},
        {member: '"zero_optimization": {"stage": "3"}', path: "zero_optimization.stage", at: '"3"', message: 'expected 0, 1, 2 or 3, got "3"'},
        {member: '"zero_optimization": {"reduce_bucket_size": 5.5e-1}', path: "zero_optimization.reduce_bucket_size", at: '5.5e-1', message: 'expected an integer ≥ 0 or "auto", got 0.55'},
        {member: '"zero_optimization": {"reduce_bucket_size": 1.5}', path: "zero_optimization.reduce_bucket_size", at: '1.5', message: 'expected an integer ≥ 0 or "auto", got 1.5'},
        {member: '"zero_optimization": {"allgather_bucket_size": "auto"}', path: "zero_optimization.allgather_bucket_size", at: '"auto"', message: 'expected an integer ≥ 0, got "auto"'},
        {member: '"zero_optimization": {"zero_hpz_partition_size": -2}', path: "zero_optimization.zero_hpz_partition_size", at: '-2', message: "expected an integer ≥ 0, got -2"},
        {member: '"zero_optimization": {"overlap_comm": "yes"}', path: "zero_optimization.overlap_comm", at: '"yes"', message: 'expected true, false or null, got "yes"'},
        {member: '"zero_optimization": {"offload_optimizer": {"ratio": 2}}', path: "zero_optimization.offload_optimizer.ratio", at: '2', message: "expected a number between 0 and 1, got 2"},
        {member: '"zero_optimization": {"offload_param": []}', path: "zero_optimization.offload_param", at: '[]', message: "expected an object or null, got an array of 0 elements"},
        {member: '"zero_optimization": {"zeropp_loco_param": {"err_beta": "high"}}', path: "zero_optimization.zeropp_loco_param.err_beta", at: '"high"', message: 'expected a number between 0 and 1, got "high"'},
        {member: '"zero_optimization": {"mics_shard_size": -2}', path: "zero_optimization.mics_shard_size", at: '-2', message: "expected an integer ≥ -1, got -2"},
        {member: '"zero_optimization": {"max_live_parameters": 1.5}', path: "zero_optimization.max_live_parameters", at: '1.5', message: "expected an integer ≥ 0, got 1.5"},
        {member: '"zero_optimization": []', path: "zero_optimization", at: '[]', message: "expected an object, got an array of 0 elements"},
        {member: '"optimizer": {"type": "Lamb"}', path: "optimizer.type", at: '"Lamb"', message: '"Lamb" is a DeepSpeed optimizer that is not supported by mixz; use Adam or AdamW'},
        {member: '"optimizer": {"type": "OneBitAdam"}', path: "optimizer.type", at: '"OneBitAdam"', message: '"OneBitAdam" is a DeepSpeed optimizer that is not supported by mixz; use Adam or AdamW'},
        {member: '"optimizer": {"type": "SGD"}', path: "optimizer.type", at: '"SGD"', message: '"SGD" is not supported by mixz; use Adam or AdamW'},
        {member: '"optimizer": {"type": 1}', path: "optimizer.type", at: '1}', message: "expected a string, got 1"},
        {member: '"optimizer": {"type": "Adam", "params": {"betas": [0.9, 1.5]}}', path: "optimizer.params.betas[1]", at: '1.5]', message: "expected a number ≥ 0 and < 1, got 1.5"},
        {member: '"optimizer": {"type": "Adam", "params": {"betas": [0.9]}}', path: "optimizer.params.betas", at: '[0.9]', message: "expected an array of 2 numbers ≥ 0 and < 1, got an array of 1 element"},
        {member: '"optimizer": {"type": "Adam", "params": {"betas": 0.9}}', path: "optimizer.params.betas", at: '0.9}', message: 'expected an array of 2 numbers ≥ 0 and < 1 or "auto", got 0.9'},
        {member: '"optimizer": {"type": "Adam", "params": {"eps": 0}}', path: "optimizer.params.eps", at: '0}', message: 'expected a number > 0 or "auto", got 0'},
        {member: '"scheduler": {"type": "OneCycle"}', path: "scheduler.type", at: '"OneCycle"', message: '"OneCycle" is not supported by mixz; use WarmupLR, WarmupDecayLR or WarmupCosineLR'},
        {member: '"scheduler": {"type": "LRRangeTest"}', path: "scheduler.type", at: '"LRRangeTest"', message: '"LRRangeTest" is not supported by mixz; use WarmupLR, WarmupDecayLR or WarmupCosineLR'},
        {member: '"scheduler": {"type": "warmuplr"}', path: "scheduler.type", at: '"warmuplr"', message: 'expected "WarmupLR", "WarmupDecayLR" or "WarmupCosineLR", got "warmuplr"; did you mean "WarmupLR"?'},
        {member: '"scheduler": {"type": "WarmupLR", "params": {"warmup_type": "Linear"}}', path: "scheduler.params.warmup_type", at: '"Linear"', message: 'expected "log" or "linear", got "Linear"; did you mean "linear"?'},
        {member: '"scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": -1}}', path: "scheduler.params.warmup_num_steps", at: '-1', message: 'expected an integer ≥ 0 or "auto", got -1'},
        {member: '"mixz": {"quant_block_size": 100}', path: "mixz.quant_block_size", at: '100', message: "expected one of 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768 or 65536, got 100"},
        {member: '"mixz": {"quant_block_size": 32}', path: "mixz.quant_block_size", at: '32', message: "expected one of 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768 or 65536, got 32"},
        {member: '"$schema": 5', path: "$schema", at: '5', message: "expected a string, got 5"},
    ];
    for (const {member, path, at, message} of cases) {
        it(`${path}: ${member}`, () => {
            const column = columnOf(member, at);
            const problem = problemOf(() => resolveConfigText(doc(member), {file: "ds.json"}));
            assert.equal(problem.code, ErrorCodes.configInvalidValue);
            assert.equal(problem.path, path);
            assert.deepEqual([problem.line, problem.column], [2, column]);
            assert.equal(problem.message, message);
        });
    }

    it("reports a missing required key at its parent object", () => {
        const problem = problemOf(() => resolveConfigText(doc('"scheduler": {"type": "WarmupDecayLR",\n  "params": {"warmup_num_steps": 10}}')));
        assert.equal(problem.code, ErrorCodes.configInvalidValue);
        assert.equal(problem.path, "scheduler.params.total_num_steps");
        assert.deepEqual([problem.line, problem.column], [3, 13]);
        assert.equal(problem.message, 'missing required key "total_num_steps" (scheduler type WarmupDecayLR needs it)');
    });

    it("reports a missing params object at the scheduler", () => {
        const problem = problemOf(() => resolveConfigText(doc('"scheduler": {"type": "WarmupCosineLR"}')));
        assert.equal(problem.path, "scheduler.params.total_num_steps");
        assert.deepEqual([problem.line, problem.column], [2, 16]);
    });

    it("reports a missing optimizer type", () => {
        const problem = problemOf(() => resolveConfigText(doc('"optimizer": {"params": {}}')));
        assert.equal(problem.code, ErrorCodes.configInvalidValue);
        assert.equal(problem.path, "optimizer.type");
        assert.equal(problem.message, 'missing required key "type"');
        assert.deepEqual([problem.line, problem.column], [2, 16]);
    });

    it("rejects a top level that is not an object", () => {
        const problem = problemOf(() => resolveConfigText("[1, 2]", {file: "ds.json"}));
        assert.equal(problem.code, ErrorCodes.configInvalidValue);
        assert.equal(problem.path, "");
        assert.deepEqual([problem.line, problem.column], [1, 1]);
        assert.equal(problem.message, "expected a JSON object at the top level, got an array of 2 elements");
    });

    it("accepts optimizer names in any letter case", () => {
        for (const type of ["Adam", "adam", "ADAMW", "AdamW", "adamW"]) {
            const {config} = resolveConfigObject({train_micro_batch_size_per_gpu: 1, optimizer: {type}});
            assert.equal(config.optimizer?.type, type.toLowerCase());
        }
    });
});

describe("schema: integers and auto", () => {
    it("accepts integral floats (5e7, 3.0) for integer keys", () => {
        const {config} = resolveConfigText(
            '{"train_micro_batch_size_per_gpu": 4.0, "zero_optimization": {"stage": 3.0, "reduce_bucket_size": 5e7, "stage3_max_live_parameters": 1e9, "sub_group_size": 1E+9}}'
        );
        assert.equal(config.train_micro_batch_size_per_gpu, 4);
        assert.equal(config.zero_optimization.stage, 3);
        assert.equal(config.zero_optimization.reduce_bucket_size, 50_000_000);
        assert.equal(config.zero_optimization.stage3_max_live_parameters, 1_000_000_000);
        assert.equal(config.zero_optimization.sub_group_size, 1_000_000_000);
        assert.ok(Number.isInteger(config.zero_optimization.reduce_bucket_size));
    });

    const autoAllowed = [
        ["train_batch_size", '"train_batch_size": "auto"'],
        ["gradient_accumulation_steps", '"gradient_accumulation_steps": "auto"'],
        ["zero_optimization.reduce_bucket_size", '"zero_optimization": {"reduce_bucket_size": "auto"}'],
        ["zero_optimization.stage3_prefetch_bucket_size", '"zero_optimization": {"stage3_prefetch_bucket_size": "auto"}'],
        ["zero_optimization.prefetch_bucket_size", '"zero_optimization": {"prefetch_bucket_size": "auto"}'],
        ["zero_optimization.stage3_param_persistence_threshold", '"zero_optimization": {"stage3_param_persistence_threshold": "auto"}'],
        ["zero_optimization.param_persistence_threshold", '"zero_optimization": {"param_persistence_threshold": "auto"}']
    ] as const;
    for (const [path, member] of autoAllowed) {
        it(`allows "auto" at ${path} (resolvable)`, () => {
            assert.doesNotThrow(() => resolveConfigText(doc(member), {worldSize: 2, hiddenSize: 64}));
        });
    }

    const autoRejected = [
        ["steps_per_print", '"steps_per_print": "auto"'],
        ["zero_optimization.stage", '"zero_optimization": {"stage": "auto"}'],
        ["zero_optimization.allgather_bucket_size", '"zero_optimization": {"allgather_bucket_size": "auto"}'],
        ["zero_optimization.stage3_max_live_parameters", '"zero_optimization": {"stage3_max_live_parameters": "auto"}'],
        ["zero_optimization.zero_hpz_partition_size", '"zero_optimization": {"zero_hpz_partition_size": "auto"}'],
        ["fp16.loss_scale", '"fp16": {"loss_scale": "auto"}'],
        ["mixz.quant_block_size", '"mixz": {"quant_block_size": "auto"}']
    ] as const;
    for (const [path, member] of autoRejected) {
        it(`rejects "auto" at ${path}`, () => {
            const problem = problemOf(() => resolveConfigText(doc(member)));
            assert.equal(problem.code, ErrorCodes.configInvalidValue);
            assert.equal(problem.path, path);
            assert.match(problem.message, /got "auto"$/);
        });
    }
});

describe("schema: many mistakes at once", () => {
    it("reports every mistake once, in document order", () => {
        const text = [
            "{",
            '  "train_micro_batch_size_per_gpu": "four",',
            '  "fp16": {"enabled": true, "initial_scale_power": 1.5},',
            '  "optimizer": {"type": "AdamW", "params": {"lr": -1, "betas": [0.9, 2], "weight_decay": "none"}},',
            '  "zero_optimization": {"stage": 5, "overlap_com": true, "reduce_bucket_size": "big"},',
            '  "wandb": {"enabled": true},',
            '  "tensorbord": {}',
            "}"
        ].join("\n");
        const problems = problemsOf(() => resolveConfigText(text, {file: "ds.json"}));
        const lines = text.split("\n");
        /** [line, column] of the first `marker` on 1-based line `line`. */
        const at = (line: number, marker: string): [number, number] => [line, lines[line - 1]!.indexOf(marker) + 1];
        assert.deepEqual(
            problems.map((p) => [p.code, p.path, p.line, p.column]),
            [
                [ErrorCodes.configInvalidValue, "train_micro_batch_size_per_gpu", ...at(2, '"four"')],
                [ErrorCodes.configInvalidValue, "fp16.initial_scale_power", ...at(3, "1.5")],
                [ErrorCodes.configInvalidValue, "optimizer.params.lr", ...at(4, "-1")],
                [ErrorCodes.configInvalidValue, "optimizer.params.betas[1]", ...at(4, "2]")],
                [ErrorCodes.configInvalidValue, "optimizer.params.weight_decay", ...at(4, '"none"')],
                [ErrorCodes.configInvalidValue, "zero_optimization.stage", ...at(5, "5,")],
                [ErrorCodes.configUnknownKey, "zero_optimization.overlap_com", ...at(5, '"overlap_com"')],
                [ErrorCodes.configInvalidValue, "zero_optimization.reduce_bucket_size", ...at(5, '"big"')],
                [ErrorCodes.configUnknownKey, "tensorbord", ...at(7, '"tensorbord"')]
            ]
        );
        assert.match(problemAt(problems, "tensorbord").message, /did you mean "tensorboard"\?/);
        assert.match(problemAt(problems, "zero_optimization.overlap_com").message, /did you mean "overlap_comm"\?/);
        for (const problem of problems) assert.equal(problem.file, "ds.json");
    });

    it("keeps schema problems and rule problems in one error", () => {
        const text = '{"train_batch_size": 30, "train_micro_batch_size_per_gpu": 4, "fp16": {"enabled": true}, "bf16": {"enabled": true}, "foo": 1}';
        const problems = problemsOf(() => resolveConfigText(text, {worldSize: 8}));
        assert.deepEqual(
            problems.map((p) => [p.code, p.path]),
            [
                [ErrorCodes.configConflict, "train_batch_size"],
                [ErrorCodes.configConflict, "bf16.enabled"],
                [ErrorCodes.configUnknownKey, "foo"]
            ]
        );
    });
});

/** Rules across keys and against the topology: hpZ, ZeRO++ stages, precision, reduce-scatter. */
import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {ErrorCodes} from "@mixz/protocol";
import {type ConfigContext, ConfigWarningCodes, UncheckedRules, resolveConfigObject, resolveConfigText} from "@mixz/config";
import {problemOf, problemsOf} from "./helpers.js";

function hpz(h: number, stage = 3): Record<string, unknown> {
    return {train_micro_batch_size_per_gpu: 1, zero_optimization: {stage, zero_hpz_partition_size: h}};
}

describe("hpZ group size", () => {
    const valid: readonly {h: number; context: ConfigContext; oneNode: boolean}[] = [
        {h: 8, context: {worldSize: 16, gpusPerNode: 8}, oneNode: false},
        {h: 4, context: {worldSize: 16, gpusPerNode: 8}, oneNode: false},
        {h: 2, context: {nodeSizes: [2, 2]}, oneNode: false},
        {h: 2, context: {nodeSizes: [4, 2, 6]}, oneNode: false},
        {h: 8, context: {worldSize: 8, gpusPerNode: 8}, oneNode: true},
        {h: 4, context: {nodeSizes: [4]}, oneNode: true},
        {h: 1, context: {worldSize: 3, gpusPerNode: 1}, oneNode: false},
        {h: 0, context: {worldSize: 3}, oneNode: false}
    ];
    for (const {h, context, oneNode} of valid) {
        it(`accepts h = ${h} with ${JSON.stringify(context)}`, () => {
            const {config, warnings, unchecked} = resolveConfigObject(hpz(h), context);
            assert.equal(config.zero_optimization.zero_hpz_partition_size, h);
            assert.deepEqual(unchecked, []);
            assert.deepEqual(
                warnings.map((w) => [w.code, w.path]),
                oneNode ? [[ConfigWarningCodes.hpzOneNode, "zero_optimization.zero_hpz_partition_size"]] : []
            );
        });
    }

    const invalid: readonly {h: number; context: ConfigContext; messages: readonly string[]}[] = [
        {h: 3, context: {worldSize: 8}, messages: ["3 does not divide world size 8"]},
        {h: 16, context: {worldSize: 8}, messages: ["16 does not divide world size 8"]},
        {
            h: 16,
            context: {worldSize: 32, gpusPerNode: 8},
            messages: ["16 is more than the 8 ranks per node; an hpZ group must stay within one node"]
        },
        {
            h: 4,
            context: {worldSize: 18, gpusPerNode: 6},
            messages: ["4 does not divide world size 18", "4 does not divide the 6 ranks per node; an hpZ group must stay within one node"]
        },
        {
            h: 4,
            context: {nodeSizes: [4, 2, 2]},
            messages: ["4 does not divide the ranks of node 1 (2 ranks), node 2 (2 ranks); an hpZ group must stay within one node"]
        },
        {
            h: 3,
            context: {nodeSizes: [3, 6, 4]},
            messages: ["3 does not divide world size 13", "3 does not divide the ranks of node 2 (4 ranks); an hpZ group must stay within one node"]
        },
        {
            h: 8,
            context: {nodeSizes: [4, 4]},
            messages: ["8 is more than the 4 ranks of the largest node; an hpZ group must stay within one node"]
        },
        {
            h: 8,
            context: {nodeSizes: [4]},
            messages: ["8 does not divide world size 4", "8 is more than the 4 ranks of the only node; an hpZ group must stay within one node"]
        }
    ];
    for (const {h, context, messages} of invalid) {
        it(`rejects h = ${h} with ${JSON.stringify(context)}`, () => {
            const text = `{"train_micro_batch_size_per_gpu": 1,\n "zero_optimization": {"stage": 3, "zero_hpz_partition_size": ${h}}}`;
            const problems = problemsOf(() => resolveConfigText(text, {file: "ds.json", ...context}));
            assert.deepEqual(
                problems.map((p) => p.message),
                messages
            );
            for (const problem of problems) {
                assert.equal(problem.code, ErrorCodes.configConflict);
                assert.equal(problem.path, "zero_optimization.zero_hpz_partition_size");
                assert.deepEqual([problem.line, problem.column], [2, 63]);
            }
        });
    }

    it("prints the DESIGN.md §4 line for a size that does not divide the world", () => {
        const error = (() => {
            try {
                resolveConfigObject(hpz(3), {worldSize: 8});
            } catch (caught) {
                return caught as Error;
            }
            return undefined;
        })();
        assert.equal(error?.message, "zero_optimization.zero_hpz_partition_size: 3 does not divide world size 8");
    });

    for (const stage of [0, 1, 2]) {
        it(`needs stage 3 (stage ${stage})`, () => {
            const problem = problemOf(() => resolveConfigObject(hpz(8, stage), {worldSize: 16, gpusPerNode: 8}));
            assert.equal(problem.code, ErrorCodes.configConflict);
            assert.equal(problem.path, "zero_optimization.zero_hpz_partition_size");
            assert.equal(problem.message, `hpZ needs zero_optimization.stage 3, got stage ${stage}`);
        });
    }

    it("lists the checks it could not make without a topology", () => {
        assert.deepEqual(resolveConfigObject(hpz(8)).unchecked, [UncheckedRules.batch, UncheckedRules.hpzWorld, UncheckedRules.hpzNode]);
        assert.deepEqual(resolveConfigObject(hpz(8), {worldSize: 16}).unchecked, [UncheckedRules.hpzNode]);
        assert.deepEqual(resolveConfigObject(hpz(8), {gpusPerNode: 8}).unchecked, [UncheckedRules.batch, UncheckedRules.hpzWorld]);
        assert.deepEqual(resolveConfigObject(hpz(1)).unchecked, [UncheckedRules.batch]);
    });

    it("still checks the node without the world size", () => {
        const problem = problemOf(() => resolveConfigObject(hpz(8), {gpusPerNode: 4}));
        assert.equal(problem.message, "8 is more than the 4 ranks per node; an hpZ group must stay within one node");
    });

    it("prefers the node sizes of a plan over gpusPerNode", () => {
        assert.doesNotThrow(() => resolveConfigObject(hpz(2), {nodeSizes: [2, 2], gpusPerNode: 3}));
    });

    it("warns about hpZ on one node at the value", () => {
        const text = '{"train_micro_batch_size_per_gpu": 1,\n "zero_optimization": {"stage": 3, "zero_hpz_partition_size": 8}}';
        const {warnings} = resolveConfigText(text, {file: "ds.json", worldSize: 8, gpusPerNode: 8});
        assert.equal(warnings.length, 1);
        assert.equal(warnings[0]!.code, ConfigWarningCodes.hpzOneNode);
        assert.deepEqual([warnings[0]!.file, warnings[0]!.line, warnings[0]!.column], ["ds.json", 2, 63]);
        assert.match(warnings[0]!.message, /^hpZ has nothing to save within one node/);
    });
});

describe("other cross-field rules", () => {
    const cases: readonly {name: string; config: Record<string, unknown>; path: string; message: string}[] = [
        {
            name: "fp16 and bf16 both enabled",
            config: {fp16: {enabled: true}, bf16: {enabled: true}},
            path: "bf16.enabled",
            message: "fp16.enabled and bf16.enabled are both true; enable at most one"
        },
        {
            name: "qwZ below stage 3",
            config: {zero_optimization: {stage: 2, zero_quantized_weights: true}},
            path: "zero_optimization.zero_quantized_weights",
            message: "qwZ needs zero_optimization.stage 3, got stage 2"
        },
        {
            name: "MixZ++ below stage 3",
            config: {zero_optimization: {zero_quantized_nontrainable_weights: true}},
            path: "zero_optimization.zero_quantized_nontrainable_weights",
            message: "MixZ++ (quantized nontrainable weights) needs zero_optimization.stage 3, got stage 0"
        },
        {
            name: "qgZ below stage 3",
            config: {zero_optimization: {stage: 1, zero_quantized_gradients: true}},
            path: "zero_optimization.zero_quantized_gradients",
            message: "qgZ needs zero_optimization.stage 3, got stage 1"
        },
        {
            name: "stage 3 reduce-scatter with a predivide factor",
            config: {gradient_predivide_factor: 2, zero_optimization: {stage: 3}},
            path: "gradient_predivide_factor",
            message: "must be 1.0 with zero_optimization.stage 3 and reduce_scatter true, got 2"
        },
        {
            name: "stage 3 reduce-scatter with prescaled gradients",
            config: {prescale_gradients: true, zero_optimization: {stage: 3, reduce_scatter: true}},
            path: "prescale_gradients",
            message: "must be false with zero_optimization.stage 3 and reduce_scatter true"
        },
        {
            name: "fp16 master weights with stage 3",
            config: {fp16: {enabled: true, fp16_master_weights_and_grads: true}, zero_optimization: {stage: 3}},
            path: "fp16.fp16_master_weights_and_grads",
            message: "needs zero_optimization.stage 2, got stage 3"
        },
        {
            name: "partial optimizer offload below stage 3",
            config: {zero_optimization: {stage: 2, offload_optimizer: {device: "cpu", ratio: 0.5}}},
            path: "zero_optimization.offload_optimizer.ratio",
            message: "0.5 (partial offload) needs zero_optimization.stage 3, got stage 2"
        }
    ];
    for (const {name, config, path, message} of cases) {
        it(name, () => {
            const problem = problemOf(() => resolveConfigObject({train_micro_batch_size_per_gpu: 1, ...config}));
            assert.equal(problem.code, ErrorCodes.configConflict);
            assert.equal(problem.path, path);
            assert.equal(problem.message, message);
        });
    }

    const allowed: readonly [string, Record<string, unknown>][] = [
        ["fp16 alone", {fp16: {enabled: true}}],
        ["bf16 alone", {bf16: {enabled: true}}],
        ["ZeRO++ on stage 3", {zero_optimization: {stage: 3, zero_quantized_weights: true, zero_quantized_nontrainable_weights: true, zero_quantized_gradients: true}}],
        ["predivide factor without reduce-scatter", {gradient_predivide_factor: 2, zero_optimization: {stage: 3, reduce_scatter: false}}],
        ["predivide factor on stage 2", {gradient_predivide_factor: 2, prescale_gradients: true, zero_optimization: {stage: 2}}],
        ["fp16 master weights on stage 2", {fp16: {enabled: true, fp16_master_weights_and_grads: true}, zero_optimization: {stage: 2}}],
        ["fp16 master weights ignored while fp16 is off (as DeepSpeed)", {fp16: {fp16_master_weights_and_grads: true}, zero_optimization: {stage: 3}}],
        ["partial offload on stage 3", {zero_optimization: {stage: 3, offload_optimizer: {device: "cpu", ratio: 0.3}}}]
    ];
    for (const [name, config] of allowed) {
        it(`allows ${name}`, () => {
            assert.doesNotThrow(() => resolveConfigObject({train_micro_batch_size_per_gpu: 1, ...config}));
        });
    }

    it("collects every broken rule of one config", () => {
        const text = [
            "{",
            '  "train_batch_size": 30,',
            '  "train_micro_batch_size_per_gpu": 4,',
            '  "prescale_gradients": true,',
            '  "fp16": {"enabled": true},',
            '  "bf16": {"enabled": true},',
            '  "zero_optimization": {"stage": 3, "zero_hpz_partition_size": 3}',
            "}"
        ].join("\n");
        const problems = problemsOf(() => resolveConfigText(text, {file: "ds.json", worldSize: 8, gpusPerNode: 4}));
        assert.deepEqual(
            problems.map((p) => [p.code, p.path, p.line]),
            [
                [ErrorCodes.configConflict, "train_batch_size", 2],
                [ErrorCodes.configConflict, "prescale_gradients", 4],
                [ErrorCodes.configConflict, "bf16.enabled", 6],
                [ErrorCodes.configConflict, "zero_optimization.zero_hpz_partition_size", 7],
                [ErrorCodes.configConflict, "zero_optimization.zero_hpz_partition_size", 7]
            ]
        );
        assert.match(problems[2]!.message, /fp16\.enabled \(line 5\) and bf16\.enabled are both true/);
    });
});

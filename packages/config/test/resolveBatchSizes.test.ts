/** DeepSpeed's batch arithmetic: train = micro × accumulation × world. */
import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {ErrorCodes} from "@mixz/protocol";
import {UncheckedRules, resolveConfigObject, resolveConfigText} from "@mixz/config";
import {problemOf} from "./helpers.js";

type Given = {train?: number | "auto"; micro?: number | "auto"; accumulation?: number | "auto"};
type Triple = [number | null, number | null, number | null];

function config(given: Given): Record<string, unknown> {
    return {
        ...(given.train === undefined ? {} : {train_batch_size: given.train}),
        ...(given.micro === undefined ? {} : {train_micro_batch_size_per_gpu: given.micro}),
        ...(given.accumulation === undefined ? {} : {gradient_accumulation_steps: given.accumulation})
    };
}

function triple(given: Given, worldSize?: number): {resolved: Triple; unchecked: readonly string[]} {
    const {config: c, unchecked} = resolveConfigObject(config(given), worldSize === undefined ? {} : {worldSize});
    return {resolved: [c.train_batch_size, c.train_micro_batch_size_per_gpu, c.gradient_accumulation_steps], unchecked};
}

describe("batch sizes with a known world size", () => {
    const cases: readonly {given: Given; world: number; expected: Triple}[] = [
        {given: {train: 32, micro: 4, accumulation: 1}, world: 8, expected: [32, 4, 1]},
        {given: {train: 64, micro: 4, accumulation: 2}, world: 8, expected: [64, 4, 2]},
        {given: {train: 64, micro: 4}, world: 8, expected: [64, 4, 2]},
        {given: {train: 64, accumulation: 4}, world: 8, expected: [64, 2, 4]},
        {given: {micro: 4, accumulation: 3}, world: 8, expected: [96, 4, 3]},
        {given: {train: 64}, world: 8, expected: [64, 8, 1]},
        {given: {micro: 4}, world: 8, expected: [32, 4, 1]},
        {given: {micro: 1}, world: 1, expected: [1, 1, 1]},
        {given: {train: 16, micro: "auto", accumulation: "auto"}, world: 4, expected: [16, 4, 1]},
        {given: {train: "auto", micro: 2, accumulation: "auto"}, world: 4, expected: [8, 2, 1]},
        {given: {train: "auto", micro: 2, accumulation: 5}, world: 3, expected: [30, 2, 5]}
    ];
    for (const {given, world, expected} of cases) {
        it(`${JSON.stringify(given)} on ${world} ranks → ${JSON.stringify(expected)}`, () => {
            const {resolved, unchecked} = triple(given, world);
            assert.deepEqual(resolved, expected);
            assert.deepEqual(unchecked, []);
        });
    }

    const errors: readonly {given: Given; world: number; message: string}[] = [
        {
            given: {train: 30, micro: 4, accumulation: 1},
            world: 8,
            message: "30 must equal train_micro_batch_size_per_gpu 4 × gradient_accumulation_steps 1 × world size 8 = 32"
        },
        {
            given: {train: 64, micro: 4, accumulation: 1},
            world: 8,
            message: "64 must equal train_micro_batch_size_per_gpu 4 × gradient_accumulation_steps 1 × world size 8 = 32"
        },
        {given: {train: 30, micro: 4}, world: 8, message: "30 is not divisible by train_micro_batch_size_per_gpu 4 × world size 8 = 32"},
        {given: {train: 16, micro: 4}, world: 8, message: "16 is not divisible by train_micro_batch_size_per_gpu 4 × world size 8 = 32"},
        {given: {train: 30, accumulation: 2}, world: 4, message: "30 is not divisible by gradient_accumulation_steps 2 × world size 4 = 8"},
        {given: {train: 30}, world: 8, message: "30 is not divisible by world size 8"},
        {given: {train: 4}, world: 8, message: "4 is not divisible by world size 8"}
    ];
    for (const {given, world, message} of errors) {
        it(`${JSON.stringify(given)} on ${world} ranks is an error`, () => {
            const text = `{\n  ${JSON.stringify(config(given)).slice(1, -1)}\n}`;
            const problem = problemOf(() => resolveConfigText(text, {file: "ds.json", worldSize: world}));
            assert.equal(problem.code, ErrorCodes.configConflict);
            assert.equal(problem.path, "train_batch_size");
            assert.equal(problem.file, "ds.json");
            assert.deepEqual([problem.line, problem.column], [2, text.split("\n")[1]!.indexOf(String(given.train)) + 1]);
            assert.equal(problem.message, message);
        });
    }
});

describe("batch sizes without the world size", () => {
    const cases: readonly {given: Given; expected: Triple; unchecked: string}[] = [
        {given: {train: 32, micro: 4, accumulation: 2}, expected: [32, 4, 2], unchecked: `${UncheckedRules.batch}; the batch sizes imply a world size of 4`},
        {given: {train: 32, micro: 4}, expected: [32, 4, null], unchecked: UncheckedRules.batch},
        {given: {train: 32, accumulation: 4}, expected: [32, null, 4], unchecked: UncheckedRules.batch},
        {given: {micro: 4, accumulation: 2}, expected: [null, 4, 2], unchecked: UncheckedRules.batch},
        {given: {train: 32}, expected: [32, null, 1], unchecked: UncheckedRules.batch},
        {given: {micro: 4}, expected: [null, 4, 1], unchecked: UncheckedRules.batch},
        {given: {micro: 4, train: "auto", accumulation: "auto"}, expected: [null, 4, 1], unchecked: UncheckedRules.batch}
    ];
    for (const {given, expected, unchecked} of cases) {
        it(`${JSON.stringify(given)} → ${JSON.stringify(expected)}, listed as unchecked`, () => {
            const result = triple(given);
            assert.deepEqual(result.resolved, expected);
            assert.deepEqual(result.unchecked, [unchecked]);
            assert.ok(result.unchecked[0]!.startsWith(UncheckedRules.batch));
        });
    }

    const errors: readonly {given: Given; message: string}[] = [
        {
            given: {train: 30, micro: 4, accumulation: 2},
            message: "30 is not divisible by train_micro_batch_size_per_gpu 4 × gradient_accumulation_steps 2 = 8"
        },
        {given: {train: 30, micro: 4}, message: "30 is not divisible by train_micro_batch_size_per_gpu 4"},
        {given: {train: 30, accumulation: 4}, message: "30 is not divisible by gradient_accumulation_steps 4"}
    ];
    for (const {given, message} of errors) {
        it(`${JSON.stringify(given)} is an error even without the world size`, () => {
            const problem = problemOf(() => resolveConfigObject(config(given)));
            assert.equal(problem.code, ErrorCodes.configConflict);
            assert.equal(problem.path, "train_batch_size");
            assert.equal(problem.message, message);
        });
    }
});

describe("batch sizes: missing and invalid", () => {
    it("needs train_batch_size or train_micro_batch_size_per_gpu", () => {
        for (const given of [{}, {accumulation: 4}] as const) {
            const text = `{\n  "zero_optimization": {}${given.accumulation === undefined ? "" : ', "gradient_accumulation_steps": 4'}\n}`;
            const problem = problemOf(() => resolveConfigText(text, {worldSize: 2}));
            assert.equal(problem.code, ErrorCodes.configConflict);
            assert.equal(problem.path, "");
            assert.deepEqual([problem.line, problem.column], [1, 1]);
            assert.equal(problem.message, "set train_batch_size or train_micro_batch_size_per_gpu");
        }
    });

    it("cannot derive anything when train and micro are both auto", () => {
        const problem = problemOf(() => resolveConfigText('{"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto"}', {worldSize: 2}));
        assert.equal(problem.code, ErrorCodes.configUnresolvedAuto);
        assert.equal(problem.path, "train_batch_size");
        assert.equal(problem.column, 22);
    });

    it("leaves invalid values to the schema pass (one problem each)", () => {
        const problem = problemOf(() => resolveConfigObject({train_batch_size: 0, train_micro_batch_size_per_gpu: 4}, {worldSize: 2}));
        assert.equal(problem.code, ErrorCodes.configInvalidValue);
        assert.equal(problem.path, "train_batch_size");
    });
});

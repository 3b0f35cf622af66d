// Learning-rate schedules against values computed by hand from DeepSpeed's formulas
// (deepspeed/runtime/lr_schedules.py): the start (steps 0 and 1, which both run at the start value
// when last_batch_iteration starts at -1), the warmup end, mid-decay, the end and beyond, for log
// and linear warmups; resumption from last_batch_iteration; checkpoint state; config errors.
import assert from "node:assert/strict";
import {describe, test} from "node:test";

import {resolveConfigObject} from "@mixz/config";
import {ErrorCodes} from "@mixz/protocol";

import {createLrSchedule, NativeErrorCodes} from "@mixz/engine";
import type {LrSchedulerConfig, LrScheduleOptimizerConfig} from "@mixz/engine";

const adam = (lr: number): LrScheduleOptimizerConfig => ({type: "adamw", params: {lr}});

function close(actual: number, expected: number, what: string): void {
    assert.ok(Math.abs(actual - expected) <= 1e-15 + 1e-12 * Math.abs(expected), `${what}: ${actual} ≠ ${expected}`);
}

function expectCode(fn: () => unknown, code: string, message: RegExp): void {
    assert.throws(fn, (error: Error & {code?: string}) => {
        assert.equal(error.code, code, error.message);
        assert.match(error.message, message);
        return true;
    });
}

describe("no scheduler", () => {
    test("the optimizer's lr at every step", () => {
        const schedule = createLrSchedule(adam(3e-4), null);
        assert.equal(schedule.type, "constant");
        for (const step of [0, 1, 17, 1_000_000]) assert.equal(schedule.lrAt(step), 3e-4);
    });

    test("without an optimizer either, the lr is unknown", () => {
        expectCode(() => createLrSchedule(null, null), ErrorCodes.configConflict, /no optimizer and no scheduler/);
    });
});

describe("WarmupLR", () => {
    const warmup = (type: "log" | "linear", min: number, extra: Partial<{warmup_num_steps: number; last_batch_iteration: number}> = {}): LrSchedulerConfig => ({
        type: "WarmupLR",
        params: {warmup_min_lr: min, warmup_max_lr: 0.01, warmup_num_steps: 10, warmup_type: type, last_batch_iteration: -1, ...extra}
    });

    test("log warmup: γ = ln(t+1)/ln(10) with t = step − 1", () => {
        const schedule = createLrSchedule(adam(0.5), warmup("log", 0));
        assert.equal(schedule.lrAt(0), 0, "iteration -1: warmup_min_lr");
        assert.equal(schedule.lrAt(1), 0, "iteration 0: ln 1 = 0");
        close(schedule.lrAt(2), (0.01 * Math.log(2)) / Math.log(10), "iteration 1");
        close(schedule.lrAt(5), (0.01 * Math.log(5)) / Math.log(10), "iteration 4");
        close(schedule.lrAt(10), 0.01, "iteration 9: ln 10 / ln 10");
        assert.equal(schedule.lrAt(11), 0.01, "iteration 10: warmup over");
        assert.equal(schedule.lrAt(1_000_000), 0.01);
    });

    test("linear warmup from a non-zero min: min + (max − min)·t/10", () => {
        const schedule = createLrSchedule(adam(0.5), warmup("linear", 0.001));
        assert.equal(schedule.lrAt(0), 0.001);
        assert.equal(schedule.lrAt(1), 0.001);
        close(schedule.lrAt(2), 0.001 + 0.009 * 0.1, "iteration 1");
        close(schedule.lrAt(6), 0.001 + 0.009 * 0.5, "iteration 5");
        close(schedule.lrAt(10), 0.001 + 0.009 * 0.9, "iteration 9: linear never reaches max inside the warmup");
        close(schedule.lrAt(11), 0.01, "iteration 10: min + (max − min)·1, as DeepSpeed computes it");
        close(schedule.lrAt(500), 0.01, "beyond");
    });

    test("warmup_num_steps 1 is raised to 2, as DeepSpeed does", () => {
        const schedule = createLrSchedule(adam(0.5), warmup("log", 0, {warmup_num_steps: 1}));
        assert.equal(schedule.lrAt(1), 0);
        close(schedule.lrAt(2), 0.01, "iteration 1: ln 2 / ln 2");
        const linear = createLrSchedule(adam(0.5), warmup("linear", 0, {warmup_num_steps: 1}));
        close(linear.lrAt(2), 0.005, "iteration 1 of 2");
    });

    test("without an optimizer it still works (the max lr is in the scheduler)", () => {
        assert.equal(createLrSchedule(null, warmup("log", 0)).lrAt(20), 0.01);
    });

    test("resuming from last_batch_iteration: the first step keeps the optimizer's lr, as in DeepSpeed", () => {
        const schedule = createLrSchedule(adam(0.5), warmup("linear", 0, {last_batch_iteration: 4}));
        assert.equal(schedule.lrAt(0), 0.5);
        close(schedule.lrAt(1), 0.01 * 0.5, "iteration 5");
        assert.equal(schedule.lrAt(6), 0.01, "iteration 10");
        expectCode(
            () => createLrSchedule(null, warmup("linear", 0, {last_batch_iteration: 4})),
            ErrorCodes.configConflict,
            /last_batch_iteration 4 needs the optimizer's lr/
        );
    });
});

describe("WarmupDecayLR", () => {
    const decay = (type: "log" | "linear", total: number): LrSchedulerConfig => ({
        type: "WarmupDecayLR",
        params: {warmup_min_lr: 0, warmup_max_lr: 0.01, warmup_num_steps: 10, warmup_type: type, last_batch_iteration: -1, total_num_steps: total}
    });

    test("linear warmup to 10, linear decay to 0 at 110", () => {
        const schedule = createLrSchedule(adam(0.5), decay("linear", 110));
        assert.equal(schedule.lrAt(0), 0);
        assert.equal(schedule.lrAt(1), 0);
        close(schedule.lrAt(10), 0.009, "iteration 9: last warmup iteration");
        close(schedule.lrAt(11), 0.01, "iteration 10: (110 − 10)/100");
        close(schedule.lrAt(61), 0.005, "iteration 60: mid-decay");
        close(schedule.lrAt(101), 0.001, "iteration 100");
        assert.equal(schedule.lrAt(111), 0, "iteration 110: the end");
        assert.equal(schedule.lrAt(200), 0, "beyond the end: clamped at 0");
    });

    test("log warmup, then decay", () => {
        const schedule = createLrSchedule(adam(0.5), decay("log", 110));
        close(schedule.lrAt(3), (0.01 * Math.log(3)) / Math.log(10), "iteration 2");
        close(schedule.lrAt(10), 0.01, "iteration 9");
        close(schedule.lrAt(36), 0.01 * 0.75, "iteration 35: (110 − 35)/100");
    });

    test("total_num_steps below the warmup: 0 right after the warmup", () => {
        const schedule = createLrSchedule(adam(0.5), decay("linear", 5));
        close(schedule.lrAt(10), 0.009, "warmup still runs");
        assert.equal(schedule.lrAt(11), 0);
    });
});

describe("WarmupCosineLR", () => {
    const cosine = (type: "log" | "linear", extra: Partial<{total_num_steps: number; last_batch_iteration: number}> = {}): LrSchedulerConfig => ({
        type: "WarmupCosineLR",
        params: {total_num_steps: 110, warmup_min_ratio: 0.1, warmup_num_steps: 10, cos_min_ratio: 0.01, warmup_type: type, last_batch_iteration: -1, ...extra}
    });
    const ratioAt = (p: number): number => 0.01 + 0.99 * ((1 + Math.cos(Math.PI * p)) / 2);

    test("linear warmup from 0.1·lr, cosine to 0.01·lr", () => {
        const schedule = createLrSchedule(adam(0.1), cosine("linear"));
        assert.equal(schedule.lrAt(0), 0, "before the start DeepSpeed returns 0, not the warmup start");
        close(schedule.lrAt(1), 0.1 * 0.1, "iteration 0: warmup_min_ratio");
        close(schedule.lrAt(6), 0.1 * (0.1 + 0.5 * 0.9), "iteration 5");
        close(schedule.lrAt(10), 0.1 * (0.1 + 0.9 * 0.9), "iteration 9");
        close(schedule.lrAt(11), 0.1 * ratioAt(1 / 100), "iteration 10: progress (10 − 10 + 1)/100");
        close(schedule.lrAt(60), 0.1 * 0.505, "iteration 59: progress 1/2, ratio 0.01 + 0.99/2");
        close(schedule.lrAt(110), 0.1 * 0.01, "iteration 109: the end, cos_min_ratio");
        close(schedule.lrAt(111), 0.1 * 0.01, "iteration 110: clamped");
        close(schedule.lrAt(10_000), 0.1 * 0.01, "far beyond: stays at the floor");
    });

    test("log warmup", () => {
        const schedule = createLrSchedule(adam(0.1), cosine("log"));
        close(schedule.lrAt(1), 0.01, "iteration 0");
        close(schedule.lrAt(4), 0.1 * (0.1 + (Math.log(4) / Math.log(10)) * 0.9), "iteration 3");
        close(schedule.lrAt(10), 0.1, "iteration 9: ratio 1");
    });

    test("total_num_steps ≤ warmup: the floor right after the warmup", () => {
        const schedule = createLrSchedule(adam(0.1), cosine("linear", {total_num_steps: 10}));
        close(schedule.lrAt(11), 0.001, "progress 1/max(1, 0) clamped to 1");
    });

    test("needs the optimizer's lr", () => {
        expectCode(() => createLrSchedule(null, cosine("linear")), ErrorCodes.configConflict, /WarmupCosineLR scales the optimizer's lr/);
    });
});

describe("checkpoint state", () => {
    const schedule = createLrSchedule(adam(0.1), {
        type: "WarmupLR",
        params: {warmup_min_lr: 0, warmup_max_lr: 0.01, warmup_num_steps: 10, warmup_type: "linear", last_batch_iteration: -1}
    });

    test("state is DeepSpeed's {last_batch_iteration}, and maps back to the step", () => {
        assert.deepEqual(schedule.state(0), {last_batch_iteration: -1});
        assert.deepEqual(schedule.state(7), {last_batch_iteration: 6});
        assert.equal(schedule.stepFromState(schedule.state(7)), 7);
        assert.equal(schedule.lrAt(schedule.stepFromState({last_batch_iteration: 5})), schedule.lrAt(6));
    });

    test("malformed states are refused", () => {
        for (const state of [null, {}, {last_batch_iteration: "5"}, {last_batch_iteration: 1.5}, 5]) {
            expectCode(() => schedule.stepFromState(state), ErrorCodes.checkpointState, /no integer last_batch_iteration/);
        }
        expectCode(() => schedule.stepFromState({last_batch_iteration: -2}), ErrorCodes.checkpointState, /before the config's start -1/);
    });

    test("steps must be non-negative integers", () => {
        for (const step of [-1, 0.5, Number.NaN, Number.POSITIVE_INFINITY]) {
            expectCode(() => schedule.lrAt(step), NativeErrorCodes.invalidArgument, /step must be a non-negative integer/);
            expectCode(() => schedule.state(step), NativeErrorCodes.invalidArgument, /step must be a non-negative integer/);
        }
    });
});

describe("config errors", () => {
    test("unsupported scheduler types name the supported ones", () => {
        for (const type of ["OneCycle", "LRRangeTest", "warmuplr"]) {
            const scheduler = {type, params: {}} as unknown as LrSchedulerConfig;
            expectCode(() => createLrSchedule(adam(0.1), scheduler), ErrorCodes.configInvalidValue, new RegExp(`"${type}" is not supported by mixz; use WarmupLR, WarmupDecayLR, WarmupCosineLR`));
        }
    });

    test("warmup_num_steps 0 is refused (DeepSpeed raises ValueError), as are bad numbers", () => {
        const base = {warmup_min_lr: 0, warmup_max_lr: 0.01, warmup_num_steps: 10, warmup_type: "log" as const, last_batch_iteration: -1};
        expectCode(() => createLrSchedule(adam(0.1), {type: "WarmupLR", params: {...base, warmup_num_steps: 0}}), ErrorCodes.configInvalidValue, /warmup_num_steps: must be an integer ≥ 1 \(got 0\)/);
        expectCode(() => createLrSchedule(adam(0.1), {type: "WarmupLR", params: {...base, warmup_max_lr: Number.NaN}}), ErrorCodes.configInvalidValue, /warmup_max_lr/);
        expectCode(() => createLrSchedule(adam(-1), null), ErrorCodes.configInvalidValue, /optimizer\.params\.lr/);
        expectCode(() => createLrSchedule(adam(0.1), {type: "WarmupLR", params: {...base, warmup_type: "cos" as "log"}}), ErrorCodes.configInvalidValue, /warmup_type "cos"/);
    });
});

describe("with configs resolved by @mixz/config", () => {
    test("ResolvedConfig's optimizer and scheduler are accepted as they are, with DeepSpeed's defaults", () => {
        const {config} = resolveConfigObject({
            train_batch_size: 8,
            optimizer: {type: "AdamW", params: {lr: 0.1}},
            scheduler: {type: "WarmupCosineLR", params: {total_num_steps: 110, warmup_num_steps: 10}}
        });
        const schedule = createLrSchedule(config.optimizer, config.scheduler);
        // Defaults: warmup_min_ratio 0, cos_min_ratio 1e-4, log warmup.
        assert.equal(schedule.lrAt(1), 0);
        close(schedule.lrAt(6), (0.1 * Math.log(6)) / Math.log(10), "iteration 5");
        close(schedule.lrAt(500), 0.1 * 1e-4, "the floor");
    });
});

// fp16 loss scaling (reference/zeropp.md §2.6): which scaler each config gets (the two DeepSpeed
// default sets, static, bf16/fp32), scripted overflow sequences with hysteresis 1 and 2,
// consecutive and non-consecutive hysteresis, window growth, the min clamp and the raise at the
// minimum, and checkpoint state that resumes exactly where it stopped.
import assert from "node:assert/strict";
import {describe, test} from "node:test";

import {resolveConfigObject} from "@mixz/config";
import {ErrorCodes} from "@mixz/protocol";

import {createLossScaler, DynamicLossScaler, lossScalerFromState, NativeErrorCodes} from "@mixz/engine";
import type {LossScaler, LossScalerConfig} from "@mixz/engine";

type Fp16 = LossScalerConfig["fp16"];

function fp16(overrides: Partial<Fp16> = {}): LossScalerConfig {
    return {
        fp16: {
            enabled: true,
            loss_scale: 0,
            initial_scale_power: 4,
            loss_scale_window: 1000,
            hysteresis: 1,
            consecutive_hysteresis: false,
            min_loss_scale: 1,
            ...overrides
        },
        bf16: {enabled: false}
    };
}

/** Runs a script of "o" (overflow) and "." (clean) updates; returns the scale after each one. */
function run(scaler: LossScaler, script: string): number[] {
    return [...script].map((c) => {
        const skipped = scaler.update(c === "o");
        assert.equal(skipped, c === "o", "a step is skipped exactly when it overflowed");
        return scaler.scale;
    });
}

function expectCode(fn: () => unknown, code: string, message: RegExp): void {
    assert.throws(fn, (error: Error & {code?: string}) => {
        assert.equal(error.code, code, error.message);
        assert.match(error.message, message);
        return true;
    });
}

describe("from resolved configs", () => {
    test("{fp16: {enabled: true}} alone: the scaler's own defaults, 2^32, hysteresis 1, window 1000", () => {
        const {config} = resolveConfigObject({train_batch_size: 8, fp16: {enabled: true}});
        const scaler = createLossScaler(config);
        assert.equal(scaler.scale, 2 ** 32);
        assert.equal(scaler.dynamic, true);
        assert.equal(scaler.checksOverflow, true);
        assert.deepEqual(scaler.state(), {
            kind: "dynamic",
            cur_scale: 2 ** 32,
            cur_iter: 0,
            last_overflow_iter: -1,
            cur_hysteresis: 1,
            scale_window: 1000,
            min_scale: 1,
            delayed_shift: 1,
            consecutive_hysteresis: false,
            raise_error_at_min_scale: true
        });
        // Hysteresis 1: the first overflow halves at once.
        scaler.update(true);
        assert.equal(scaler.scale, 2 ** 31);
    });

    test("any dynamic key present: DeepSpeed's config defaults, 2^16, hysteresis 2", () => {
        const {config} = resolveConfigObject({train_batch_size: 8, fp16: {enabled: true, loss_scale_window: 100}});
        const scaler = createLossScaler(config);
        assert.equal(scaler.scale, 2 ** 16);
        const state = scaler.state();
        assert.equal(state.kind, "dynamic");
        assert.equal(state.kind === "dynamic" && state.delayed_shift, 2);
        assert.equal(state.kind === "dynamic" && state.scale_window, 100);
        assert.deepEqual(run(scaler, "oo"), [2 ** 16, 2 ** 15], "the first overflow only uses up hysteresis");
    });

    test("the default window: the scale doubles at the 1000th clean step, not before", () => {
        const {config} = resolveConfigObject({train_batch_size: 8, fp16: {enabled: true}});
        const scaler = createLossScaler(config);
        run(scaler, ".".repeat(999));
        assert.equal(scaler.scale, 2 ** 32);
        run(scaler, ".");
        assert.equal(scaler.scale, 2 ** 33);
    });

    test("a static loss_scale: fixed, overflow still skips the step", () => {
        const {config} = resolveConfigObject({train_batch_size: 8, fp16: {enabled: true, loss_scale: 128}});
        const scaler = createLossScaler(config);
        assert.equal(scaler.dynamic, false);
        assert.equal(scaler.checksOverflow, true);
        assert.deepEqual(run(scaler, "o.oo..."), [128, 128, 128, 128, 128, 128, 128]);
        assert.deepEqual(scaler.state(), {kind: "static", cur_scale: 128, checks_overflow: true});
    });

    test("bf16 and fp32: a constant 1 with no overflow check", () => {
        for (const raw of [{bf16: {enabled: true}}, {}]) {
            const {config} = resolveConfigObject({train_batch_size: 8, ...raw});
            const scaler = createLossScaler(config);
            assert.equal(scaler.scale, 1);
            assert.equal(scaler.checksOverflow, false);
            assert.equal(scaler.update(true), false, "nothing is skipped: DeepSpeed never looks");
            assert.equal(scaler.scale, 1);
        }
    });
});

describe("dynamic sequences", () => {
    test("hysteresis 1, window 3: doubles every 3 clean steps, halves on each overflow", () => {
        const scaler = createLossScaler(fp16({loss_scale_window: 3}));
        // iter:                  0  1  2   3   4   5   6   7   8   9   10  11
        assert.deepEqual(run(scaler, "......o...o."), [16, 16, 32, 32, 32, 64, 32, 32, 32, 64, 32, 32]);
    });

    test("an overflow restarts the window count", () => {
        const scaler = createLossScaler(fp16({loss_scale_window: 3}));
        assert.deepEqual(run(scaler, "..o..o...."), [16, 16, 8, 8, 8, 4, 4, 4, 8, 8]);
    });

    test("hysteresis 2, not consecutive: a clean step does not refill it, only a window does", () => {
        const scaler = createLossScaler(fp16({hysteresis: 2}));
        // o: 2→1 tolerated; o: halve; o: halve (stays at 1); clean steps leave it at 1; o: halve.
        assert.deepEqual(run(scaler, "ooo..o"), [16, 8, 4, 4, 4, 2]);
        const state = scaler.state();
        assert.equal(state.kind === "dynamic" && state.cur_hysteresis, 1);
    });

    test("hysteresis 2, consecutive: every clean step refills it", () => {
        const scaler = createLossScaler(fp16({hysteresis: 2, consecutive_hysteresis: true}));
        assert.deepEqual(run(scaler, "o.o.o.oo"), [16, 16, 16, 16, 16, 16, 16, 8]);
    });

    test("hysteresis 3, not consecutive: refilled when the window doubles the scale", () => {
        const scaler = createLossScaler(fp16({hysteresis: 3, loss_scale_window: 2}));
        // iter 0 o: h 3→2; 1 clean (1 mod 2); 2 clean (2 mod 2 = 0): h := 3, scale 32;
        // 3 o: h 3→2; 4 o: h 2→1; 5 o: halve to 16.
        assert.deepEqual(run(scaler, "o..ooo"), [16, 16, 32, 32, 32, 16]);
    });

    test("the min clamp, then the raise at the minimum (state untouched)", () => {
        const scaler = createLossScaler(fp16({initial_scale_power: 2, min_loss_scale: 3}));
        assert.deepEqual(run(scaler, "o"), [3], "max(4 / 2, 3)");
        const before = scaler.state();
        expectCode(() => scaler.update(true), ErrorCodes.lossScaleAtMinimum, /^current loss scale already at minimum \(3\)/);
        assert.deepEqual(scaler.state(), before);
        // A clean step afterwards works as usual.
        assert.equal(scaler.update(false), false);
    });

    test("with hysteresis, the raise waits until the hysteresis is used up", () => {
        const scaler = createLossScaler(fp16({initial_scale_power: 0, hysteresis: 2}));
        assert.equal(scaler.update(true), true, "tolerated at the minimum");
        expectCode(() => scaler.update(true), ErrorCodes.lossScaleAtMinimum, /already at minimum/);
    });

    test("raiseErrorAtMinScale false keeps going at the minimum", () => {
        const scaler = createLossScaler(fp16({initial_scale_power: 1}), {raiseErrorAtMinScale: false});
        assert.deepEqual(run(scaler, "ooo"), [1, 1, 1]);
    });

    test("update needs a boolean", () => {
        const scaler = createLossScaler(fp16());
        expectCode(() => scaler.update(1 as unknown as boolean), NativeErrorCodes.invalidArgument, /overflow must be a boolean/);
    });
});

describe("checkpoint state", () => {
    test("a scaler restored mid-sequence (through JSON) continues exactly like one that never stopped", () => {
        const script = "..o.oo...o....o..o.....";
        for (const config of [fp16({hysteresis: 2, loss_scale_window: 3}), fp16({hysteresis: 2, consecutive_hysteresis: true, loss_scale_window: 4})]) {
            const straight = createLossScaler(config);
            const expected = run(straight, script);
            for (let cut = 0; cut <= script.length; cut++) {
                const first = createLossScaler(config);
                const head = run(first, script.slice(0, cut));
                const resumed = lossScalerFromState(JSON.parse(JSON.stringify(first.state())));
                assert.ok(resumed instanceof DynamicLossScaler);
                assert.deepEqual([...head, ...run(resumed, script.slice(cut))], expected, `cut at ${cut}`);
                assert.deepEqual(resumed.state(), straight.state());
            }
        }
    });

    test("static scalers round trip too", () => {
        const restored = lossScalerFromState(createLossScaler(fp16({loss_scale: 64})).state());
        assert.equal(restored.scale, 64);
        assert.equal(restored.update(true), true);
        const constant = lossScalerFromState({kind: "static", cur_scale: 1, checks_overflow: false});
        assert.equal(constant.update(true), false);
    });

    test("malformed states are refused with MIXZ_ERR_CHECKPOINT_STATE", () => {
        const good = createLossScaler(fp16({hysteresis: 2})).state();
        const cases: Array<[unknown, RegExp]> = [
            [null, /is not an object/],
            [{...good, kind: "other"}, /kind must be "dynamic" or "static"/],
            [{...good, cur_scale: 0}, /cur_scale must be a finite number > 0/],
            [{...good, cur_scale: "16"}, /cur_scale/],
            [{...good, scale_window: 0}, /scale_window must be an integer ≥ 1/],
            [{...good, delayed_shift: 1.5}, /delayed_shift/],
            [{...good, cur_hysteresis: 3}, /cur_hysteresis must be an integer in \[1, 2\]/],
            [{...good, cur_hysteresis: 0}, /cur_hysteresis/],
            [{...good, cur_iter: -1}, /cur_iter/],
            [{...good, last_overflow_iter: 0}, /last_overflow_iter must be −1 or below cur_iter/],
            [{...good, consecutive_hysteresis: "no"}, /consecutive_hysteresis must be a boolean/],
            [{kind: "static", cur_scale: 1}, /checks_overflow must be a boolean/],
            [{kind: "static", cur_scale: -1, checks_overflow: true}, /cur_scale/]
        ];
        for (const [state, message] of cases) expectCode(() => lossScalerFromState(state), ErrorCodes.checkpointState, message);
    });
});

describe("config errors", () => {
    test("fp16 and bf16 together, bad numbers", () => {
        expectCode(() => createLossScaler({...fp16(), bf16: {enabled: true}}), ErrorCodes.configConflict, /fp16 and bf16 cannot both be enabled/);
        expectCode(() => createLossScaler(fp16({loss_scale_window: 0})), ErrorCodes.configInvalidValue, /fp16\.loss_scale_window: must be an integer ≥ 1/);
        expectCode(() => createLossScaler(fp16({hysteresis: 0})), ErrorCodes.configInvalidValue, /fp16\.hysteresis/);
        expectCode(() => createLossScaler(fp16({min_loss_scale: 0})), ErrorCodes.configInvalidValue, /fp16\.min_loss_scale/);
        expectCode(() => createLossScaler(fp16({loss_scale: -1})), ErrorCodes.configInvalidValue, /fp16\.loss_scale/);
        expectCode(() => createLossScaler(fp16({initial_scale_power: 1.5})), ErrorCodes.configInvalidValue, /fp16\.initial_scale_power/);
    });
});

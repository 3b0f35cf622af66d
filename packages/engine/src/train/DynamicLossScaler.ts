/**
 * fp16 loss scaling, as DeepSpeed does it (reference/zeropp.md §2.6; deepspeed/runtime/fp16/loss_scaler.py).
 *
 * Which scaler a config gets:
 *   - fp16 with loss_scale 0: a DynamicLossScaler starting at 2^initial_scale_power. The config
 *     layer has already picked DeepSpeed's defaults for the keys the fp16 section left out (2^16,
 *     window 1000, min 1, hysteresis 2 when it gave any dynamic-scaler key; the scaler's own
 *     2^32, 1000, 1, 1 when it gave none), so every field read here is final;
 *   - fp16 with loss_scale > 0: a static scale. Overflow is still checked and the step skipped, as
 *     ZeRO-3 checks fp16 gradients whatever the scaler;
 *   - bf16 or fp32: a constant scale of 1 and no overflow check at all.
 *
 * Vocabulary (DeepSpeed's field names, kept so the state matches its checkpoints): `cur_iter` counts
 * update() calls; `last_overflow_iter` is the cur_iter of the last overflow (−1: none yet);
 * `delayed_shift` is the configured hysteresis and `cur_hysteresis` the overflows still tolerated
 * before the scale is halved.
 *
 * update(overflow), called once per optimizer step (skipped or not):
 *   overflow: if delayed_shift = 1 or cur_hysteresis = 1: at min_scale throw "current loss scale
 *             already at minimum" (MIXZ_ERR_LOSS_SCALE_MIN, state untouched), else
 *             scale = max(scale / 2, min_scale); otherwise cur_hysteresis −= 1.
 *             Then last_overflow_iter = cur_iter.
 *   clean:    with consecutive_hysteresis, cur_hysteresis = delayed_shift. If
 *             (cur_iter − last_overflow_iter) mod window = 0: without consecutive_hysteresis
 *             cur_hysteresis = delayed_shift, and scale *= 2.
 *   always:   cur_iter += 1.
 * So the scale first doubles at the window-th clean update, and again every window clean updates
 * after an overflow. (Later DeepSpeed releases test (cur_iter − last_overflow_iter − 1) > 0 and mod
 * window = 0 instead, which doubles one update later; zeropp.md's snapshot rule is followed here.)
 */
import type {ResolvedBf16Config, ResolvedFp16Config} from "@mixz/config";
import {ErrorCodes, InputError, MixzError} from "@mixz/protocol";

import {NativeErrorCodes} from "../binding/AddonTypes.js";

/** The parts of a resolved config's fp16 and bf16 sections (@mixz/config) the scaler reads. */
export interface LossScalerConfig {
    readonly fp16: Pick<ResolvedFp16Config, "enabled" | "loss_scale" | "initial_scale_power" | "loss_scale_window" | "hysteresis" | "consecutive_hysteresis" | "min_loss_scale">;
    readonly bf16: Pick<ResolvedBf16Config, "enabled">;
}

/** The dynamic scaler's full state, with DeepSpeed's field names; restoring it ignores the config, as DeepSpeed's checkpoint load does. */
export interface DynamicLossScalerState {
    readonly kind: "dynamic";
    readonly cur_scale: number;
    readonly cur_iter: number;
    readonly last_overflow_iter: number;
    readonly cur_hysteresis: number;
    readonly scale_window: number;
    readonly min_scale: number;
    readonly delayed_shift: number;
    readonly consecutive_hysteresis: boolean;
    readonly raise_error_at_min_scale: boolean;
}

export interface StaticLossScalerState {
    readonly kind: "static";
    readonly cur_scale: number;
    /** false for bf16 and fp32. */
    readonly checks_overflow: boolean;
}

export type LossScalerState = DynamicLossScalerState | StaticLossScalerState;

export interface LossScaler {
    /** The loss is multiplied by this before backward, and gradients divided by it. */
    readonly scale: number;
    readonly dynamic: boolean;
    /** Whether the engine must look for inf/NaN gradients before the step (fp16 only). */
    readonly checksOverflow: boolean;
    /** Records one optimizer step's overflow result; returns true when the step must be skipped. */
    update(overflow: boolean): boolean;
    /** A plain JSON-able copy of the state, for checkpoints. */
    state(): LossScalerState;
}

/** Options DeepSpeed's config does not expose. */
export interface DynamicLossScalerOptions {
    /** Throw when an overflow happens at min_scale (default true, DeepSpeed's default). false: keep min_scale and go on. */
    readonly raiseErrorAtMinScale?: boolean;
}

/** The scaler a resolved config asks for (see the module comment). */
export function createLossScaler(config: LossScalerConfig, options: DynamicLossScalerOptions = {}): LossScaler {
    const {fp16, bf16} = config;
    if (fp16.enabled && bf16.enabled) {
        throw new InputError([{code: ErrorCodes.configConflict, path: "fp16.enabled", message: "fp16 and bf16 cannot both be enabled"}]);
    }
    if (!fp16.enabled) return new StaticLossScaler(1, false);
    const lossScale = fp16.loss_scale;
    if (typeof lossScale !== "number" || !Number.isFinite(lossScale) || lossScale < 0) {
        throw configValue("fp16.loss_scale", `must be a finite number ≥ 0 (got ${String(lossScale)})`);
    }
    if (lossScale > 0) return new StaticLossScaler(lossScale, true);
    const power = fp16.initial_scale_power;
    if (!Number.isSafeInteger(power) || power < 0 || power > 1000) {
        throw configValue("fp16.initial_scale_power", `must be an integer in [0, 1000] (got ${String(power)})`);
    }
    return new DynamicLossScaler({
        kind: "dynamic",
        cur_scale: 2 ** power,
        cur_iter: 0,
        last_overflow_iter: -1,
        cur_hysteresis: fp16.hysteresis,
        scale_window: fp16.loss_scale_window,
        min_scale: fp16.min_loss_scale,
        delayed_shift: fp16.hysteresis,
        consecutive_hysteresis: fp16.consecutive_hysteresis,
        raise_error_at_min_scale: options.raiseErrorAtMinScale ?? true
    }, "config");
}

/** Rebuilds a scaler from state(): the whole state wins over the config, as in DeepSpeed. Throws MIXZ_ERR_CHECKPOINT_STATE. */
export function lossScalerFromState(state: unknown): LossScaler {
    if (typeof state !== "object" || state === null) throw badState(`is not an object (got ${JSON.stringify(state)})`);
    const kind = (state as {kind?: unknown}).kind;
    if (kind === "dynamic") return new DynamicLossScaler(state as DynamicLossScalerState, "state");
    if (kind === "static") {
        const {cur_scale: scale, checks_overflow: checks} = state as StaticLossScalerState;
        if (!isPositiveFinite(scale)) throw badState(`cur_scale must be a finite number > 0 (got ${String(scale)})`);
        if (typeof checks !== "boolean") throw badState("checks_overflow must be a boolean");
        return new StaticLossScaler(scale, checks);
    }
    throw badState(`kind must be "dynamic" or "static" (got ${JSON.stringify(kind)})`);
}

/** DeepSpeed's DynamicLossScaler (see the module comment for the update rule). */
export class DynamicLossScaler implements LossScaler {
    readonly dynamic = true;
    readonly checksOverflow = true;
    private curScale: number;
    private curIter: number;
    private lastOverflowIter: number;
    private curHysteresis: number;
    private readonly scaleWindow: number;
    private readonly minScale: number;
    private readonly delayedShift: number;
    private readonly consecutiveHysteresis: boolean;
    private readonly raiseErrorAtMinScale: boolean;

    /** `from` says whose mistake bad values are: the config's (InputError) or a checkpoint's. */
    constructor(state: DynamicLossScalerState, from: "config" | "state" = "state") {
        const fail = (field: string, configKey: string, rule: string, value: unknown): never => {
            const message = `${rule} (got ${JSON.stringify(value) ?? String(value)})`;
            throw from === "config" ? configValue(`fp16.${configKey}`, message) : badState(`${field} ${message}`);
        };
        const positiveInteger = (field: keyof DynamicLossScalerState, configKey: string): number => {
            const value = state[field];
            return Number.isSafeInteger(value) && (value as number) >= 1 ? (value as number) : fail(field, configKey, "must be an integer ≥ 1", value);
        };
        if (!isPositiveFinite(state.cur_scale)) fail("cur_scale", "initial_scale_power", "must be a finite number > 0", state.cur_scale);
        if (!isPositiveFinite(state.min_scale)) fail("min_scale", "min_loss_scale", "must be a finite number > 0", state.min_scale);
        this.scaleWindow = positiveInteger("scale_window", "loss_scale_window");
        this.delayedShift = positiveInteger("delayed_shift", "hysteresis");
        if (typeof state.consecutive_hysteresis !== "boolean") {
            fail("consecutive_hysteresis", "consecutive_hysteresis", "must be a boolean", state.consecutive_hysteresis);
        }
        if (typeof state.raise_error_at_min_scale !== "boolean") {
            fail("raise_error_at_min_scale", "raise_error_at_min_scale", "must be a boolean", state.raise_error_at_min_scale);
        }
        if (!Number.isSafeInteger(state.cur_iter) || state.cur_iter < 0) fail("cur_iter", "cur_iter", "must be an integer ≥ 0", state.cur_iter);
        // −1 (no overflow yet) or an update already made.
        const lastOverflow = state.last_overflow_iter;
        if (!Number.isSafeInteger(lastOverflow) || lastOverflow < -1 || (lastOverflow !== -1 && lastOverflow >= state.cur_iter)) {
            fail("last_overflow_iter", "last_overflow_iter", "must be −1 or below cur_iter", lastOverflow);
        }
        // update() keeps cur_hysteresis in [1, delayed_shift]; anything else is a corrupt state.
        const hysteresis = state.cur_hysteresis;
        if (!Number.isSafeInteger(hysteresis) || hysteresis < 1 || hysteresis > this.delayedShift) {
            fail("cur_hysteresis", "hysteresis", `must be an integer in [1, ${this.delayedShift}]`, hysteresis);
        }
        this.curScale = state.cur_scale;
        this.curIter = state.cur_iter;
        this.lastOverflowIter = state.last_overflow_iter;
        this.curHysteresis = hysteresis;
        this.minScale = state.min_scale;
        this.consecutiveHysteresis = state.consecutive_hysteresis;
        this.raiseErrorAtMinScale = state.raise_error_at_min_scale;
    }

    get scale(): number {
        return this.curScale;
    }

    update(overflow: boolean): boolean {
        if (typeof overflow !== "boolean") {
            throw new MixzError(NativeErrorCodes.invalidArgument, `loss scaler update: overflow must be a boolean (got ${typeof overflow})`, {
                category: "platform"
            });
        }
        if (overflow) {
            if (this.delayedShift === 1 || this.curHysteresis === 1) {
                if (this.curScale === this.minScale && this.raiseErrorAtMinScale) {
                    throw new MixzError(
                        ErrorCodes.lossScaleAtMinimum,
                        `current loss scale already at minimum (${this.minScale}): gradients overflowed at update ${this.curIter} and the scale cannot decrease any more`,
                        {category: "worker", context: {scale: this.curScale, minScale: this.minScale, iteration: this.curIter}}
                    );
                }
                this.curScale = Math.max(this.curScale / 2, this.minScale);
            } else {
                this.curHysteresis -= 1;
            }
            this.lastOverflowIter = this.curIter;
        } else {
            if (this.consecutiveHysteresis) this.curHysteresis = this.delayedShift;
            if ((this.curIter - this.lastOverflowIter) % this.scaleWindow === 0) {
                if (!this.consecutiveHysteresis) this.curHysteresis = this.delayedShift;
                this.curScale *= 2;
            }
        }
        this.curIter += 1;
        return overflow;
    }

    state(): DynamicLossScalerState {
        return {
            kind: "dynamic",
            cur_scale: this.curScale,
            cur_iter: this.curIter,
            last_overflow_iter: this.lastOverflowIter,
            cur_hysteresis: this.curHysteresis,
            scale_window: this.scaleWindow,
            min_scale: this.minScale,
            delayed_shift: this.delayedShift,
            consecutive_hysteresis: this.consecutiveHysteresis,
            raise_error_at_min_scale: this.raiseErrorAtMinScale
        };
    }
}

/** A fixed scale: fp16's static loss_scale (overflow checked, step skipped), or 1 for bf16 and fp32 (never checked). */
export class StaticLossScaler implements LossScaler {
    readonly dynamic = false;

    constructor(
        readonly scale: number,
        readonly checksOverflow: boolean
    ) {}

    update(overflow: boolean): boolean {
        // bf16 and fp32 never look for overflow (DeepSpeed does not), so nothing is skipped.
        return this.checksOverflow && overflow === true;
    }

    state(): StaticLossScalerState {
        return {kind: "static", cur_scale: this.scale, checks_overflow: this.checksOverflow};
    }
}

function isPositiveFinite(value: unknown): value is number {
    return typeof value === "number" && Number.isFinite(value) && value > 0;
}

function configValue(path: string, message: string): InputError {
    return new InputError([{code: ErrorCodes.configInvalidValue, path, message}]);
}

function badState(message: string): MixzError {
    return new MixzError(ErrorCodes.checkpointState, `loss scaler state: ${message}`, {category: "user"});
}

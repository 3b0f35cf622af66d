/**
 * Learning-rate schedules: DeepSpeed's WarmupLR, WarmupDecayLR and WarmupCosineLR
 * (deepspeed/runtime/lr_schedules.py), as pure functions of the step count.
 *
 * Step convention. `step` is the number of optimizer steps *applied* so far: a step skipped for
 * an fp16 overflow does not count, because DeepSpeed's engine calls `lr_scheduler.step()` only
 * after a step that was applied. `lrAt(step)` is the lr the next optimizer step uses. In
 * DeepSpeed's terms the scheduler's `last_batch_iteration` is then L0 + step, where L0 is
 * `scheduler.params.last_batch_iteration` (default −1), and the lr is `get_lr()` at that iteration:
 *   - with L0 = −1 (the default), lrAt(0) = get_lr() at iteration −1, which the scheduler's
 *     constructor writes into the optimizer: warmup_min_lr for WarmupLR and WarmupDecayLR, and 0
 *     for WarmupCosineLR (DeepSpeed returns 0 before the schedule starts). lrAt(1) is the value at
 *     iteration 0, and so on: the first two steps run at the start value;
 *   - with L0 ≠ −1, DeepSpeed's constructor leaves the optimizer's own lr in place, so
 *     lrAt(0) = optimizer.params.lr, and lrAt(step) = get_lr() at L0 + step for step ≥ 1.
 * Without a scheduler the lr is optimizer.params.lr at every step.
 *
 * Formulas, with t = last_batch_iteration and W = max(2, warmup_num_steps) as DeepSpeed clamps it:
 *   warmup γ(t) = ln(t + 1) / ln(W) ("log") or t / W ("linear"), for 0 ≤ t < W;
 *   WarmupLR:       lr = min + (max − min) · (t < W ? γ(t) : 1);
 *   WarmupDecayLR:  as WarmupLR, but for t ≥ W the factor is max(0, (T − t) / max(1, T − W));
 *   WarmupCosineLR: lr = base · r, base = optimizer.params.lr; for t < W r = wmin + γ(t) · (1 − wmin);
 *                   else p = min(1, (t − W + 1) / max(1, T − W)),
 *                   r = max(0, cmin + (1 − cmin) · (1 + cos(π p)) / 2).
 * T is total_num_steps, wmin warmup_min_ratio, cmin cos_min_ratio. The clamp of p at 1 (the lr
 * stays at cmin · base after T instead of rising again) is in current DeepSpeed; older releases
 * let the cosine come back up.
 *
 * State for checkpoints: the schedule itself is stateless; DeepSpeed checkpoints the scheduler as
 * {last_batch_iteration}, which `state(step)` produces and `stepFromState` maps back to a step.
 */
import type {ResolvedSchedulerConfig, WarmupCosineLRParams, WarmupDecayLRParams, WarmupLRParams, WarmupType} from "@mixz/config";
import {ErrorCodes, InputError, MixzError} from "@mixz/protocol";

import {NativeErrorCodes} from "../binding/AddonTypes.js";

/** The optimizer section as the config layer resolves it (@mixz/config ResolvedOptimizerConfig); only lr is read. */
export interface LrScheduleOptimizerConfig {
    readonly type: string;
    readonly params: {readonly lr: number};
}

// The scheduler section's types are the config layer's (@mixz/config), under this module's names.
export type LrWarmupType = WarmupType;
export type WarmupLRScheduleParams = WarmupLRParams;
export type WarmupDecayLRScheduleParams = WarmupDecayLRParams;
export type WarmupCosineLRScheduleParams = WarmupCosineLRParams;
export type LrSchedulerConfig = ResolvedSchedulerConfig;

/** The schedulers implemented here. DeepSpeed's LRRangeTest and OneCycle are refused by the config layer. */
export const supportedLrSchedulers = ["WarmupLR", "WarmupDecayLR", "WarmupCosineLR"] as const;

/** DeepSpeed's scheduler state_dict. */
export interface LrScheduleState {
    readonly last_batch_iteration: number;
}

export interface LrSchedule {
    /** The scheduler type, or "constant" without one. */
    readonly type: LrSchedulerConfig["type"] | "constant";
    /** The lr of the next optimizer step after `step` applied steps (see the module comment). */
    lrAt(step: number): number;
    /** DeepSpeed's scheduler state after `step` applied steps: {last_batch_iteration: L0 + step}. */
    state(step: number): LrScheduleState;
    /** The applied-step count a saved state stands for; throws MIXZ_ERR_CHECKPOINT_STATE if it cannot be one. */
    stepFromState(state: unknown): number;
}

/**
 * Builds the schedule of a resolved config. Throws an InputError when the config cannot give an lr:
 * no optimizer where the optimizer's lr is needed (no scheduler, WarmupCosineLR, or
 * last_batch_iteration ≠ −1), warmup_num_steps < 1 (DeepSpeed raises too), or a scheduler type
 * other than the supported ones.
 */
export function createLrSchedule(optimizer: LrScheduleOptimizerConfig | null, scheduler: LrSchedulerConfig | null): LrSchedule {
    const baseLr = optimizer === null ? null : checkLr(optimizer.params.lr, "optimizer.params.lr");
    if (scheduler === null) {
        if (baseLr === null) throw configConflict("optimizer", "no optimizer and no scheduler: the learning rate is unknown");
        return makeSchedule("constant", -1, baseLr, () => baseLr);
    }
    const type = (scheduler as {type: unknown}).type;
    if (typeof type !== "string" || !(supportedLrSchedulers as readonly string[]).includes(type)) {
        throw new InputError([
            {
                code: ErrorCodes.configInvalidValue,
                path: "scheduler.type",
                message: `scheduler ${JSON.stringify(type)} is not supported by mixz; use ${supportedLrSchedulers.join(", ")}`
            }
        ]);
    }
    const params = scheduler.params;
    const start = checkInteger(params.last_batch_iteration, "scheduler.params.last_batch_iteration", -1);
    if (start !== -1 && baseLr === null) {
        throw configConflict(
            "scheduler.params.last_batch_iteration",
            `last_batch_iteration ${start} needs the optimizer's lr (DeepSpeed keeps it for the first step), but the config has no optimizer`
        );
    }
    const warmupSteps = Math.max(2, checkInteger(params.warmup_num_steps, "scheduler.params.warmup_num_steps", 1));
    const gamma = warmupGamma(params.warmup_type, warmupSteps);

    switch (scheduler.type) {
        case "WarmupLR":
        case "WarmupDecayLR": {
            const p = scheduler.params;
            const minLr = checkLr(p.warmup_min_lr, "scheduler.params.warmup_min_lr");
            const maxLr = checkLr(p.warmup_max_lr, "scheduler.params.warmup_max_lr");
            const total =
                scheduler.type === "WarmupDecayLR"
                    ? checkInteger(scheduler.params.total_num_steps, "scheduler.params.total_num_steps", 1)
                    : null;
            return makeSchedule(scheduler.type, start, baseLr, (t) => {
                if (t < 0) return minLr;
                let factor: number;
                if (t < warmupSteps) factor = gamma(t);
                else if (total === null) factor = 1;
                else factor = Math.max(0, (total - t) / Math.max(1, total - warmupSteps));
                return minLr + (maxLr - minLr) * factor;
            });
        }
        case "WarmupCosineLR": {
            const p = scheduler.params;
            if (baseLr === null) {
                throw configConflict("scheduler.type", "WarmupCosineLR scales the optimizer's lr, but the config has no optimizer");
            }
            const total = checkInteger(p.total_num_steps, "scheduler.params.total_num_steps", 1);
            const warmupMin = checkLr(p.warmup_min_ratio, "scheduler.params.warmup_min_ratio");
            const cosMin = checkLr(p.cos_min_ratio, "scheduler.params.cos_min_ratio");
            return makeSchedule("WarmupCosineLR", start, baseLr, (t) => {
                if (t < 0) return 0;
                let ratio: number;
                if (t < warmupSteps) {
                    ratio = warmupMin + gamma(t) * (1 - warmupMin);
                } else {
                    const progress = Math.min(1, (t - warmupSteps + 1) / Math.max(1, total - warmupSteps));
                    ratio = Math.max(0, cosMin + (1 - cosMin) * ((1 + Math.cos(Math.PI * progress)) / 2));
                }
                return baseLr * ratio;
            });
        }
    }
}

function warmupGamma(type: unknown, warmupSteps: number): (t: number) => number {
    if (type === "log") {
        const inverseLog = 1 / Math.log(warmupSteps);
        return (t) => inverseLog * Math.log(t + 1);
    }
    if (type === "linear") return (t) => t / warmupSteps;
    // DeepSpeed falls back to log with a warning; the config layer only lets the two through.
    throw new InputError([
        {code: ErrorCodes.configInvalidValue, path: "scheduler.params.warmup_type", message: `warmup_type ${JSON.stringify(type)} is not "log" or "linear"`}
    ]);
}

function makeSchedule(
    type: LrSchedule["type"],
    start: number,
    baseLr: number | null,
    lrAtIteration: (t: number) => number
): LrSchedule {
    return {
        type,
        lrAt(step: number): number {
            checkStep(step);
            // DeepSpeed's constructor writes get_lr() into the optimizer only when it starts fresh.
            if (step === 0 && start !== -1 && baseLr !== null) return baseLr;
            return lrAtIteration(start + step);
        },
        state(step: number): LrScheduleState {
            checkStep(step);
            return {last_batch_iteration: start + step};
        },
        stepFromState(state: unknown): number {
            const value = typeof state === "object" && state !== null ? (state as Record<string, unknown>)["last_batch_iteration"] : undefined;
            if (!Number.isSafeInteger(value)) {
                throw new MixzError(ErrorCodes.checkpointState, `lr schedule state has no integer last_batch_iteration (got ${describe(value)})`, {
                    category: "user",
                    context: {state}
                });
            }
            const step = (value as number) - start;
            if (step < 0) {
                throw new MixzError(
                    ErrorCodes.checkpointState,
                    `lr schedule state last_batch_iteration ${String(value)} is before the config's start ${start}`,
                    {category: "user", context: {state, start}}
                );
            }
            return step;
        }
    };
}

function checkStep(step: number): void {
    if (!Number.isSafeInteger(step) || step < 0) {
        throw new MixzError(NativeErrorCodes.invalidArgument, `lr schedule: step must be a non-negative integer (got ${describe(step)})`, {
            category: "platform",
            context: {step}
        });
    }
}

function checkLr(value: number, path: string): number {
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
        throw invalidValue(path, `must be a finite number ≥ 0 (got ${describe(value)})`);
    }
    return value;
}

function checkInteger(value: number, path: string, min: number): number {
    if (!Number.isSafeInteger(value) || value < min) {
        throw invalidValue(path, `must be an integer ≥ ${min} (got ${describe(value)})`);
    }
    return value;
}

function invalidValue(path: string, message: string): InputError {
    return new InputError([{code: ErrorCodes.configInvalidValue, path, message}]);
}

function configConflict(path: string, message: string): InputError {
    return new InputError([{code: ErrorCodes.configConflict, path, message}]);
}

function describe(value: unknown): string {
    return typeof value === "number" ? String(value) : JSON.stringify(value) ?? String(value);
}

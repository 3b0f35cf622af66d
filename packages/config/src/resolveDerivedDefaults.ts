/**
 * Defaults that depend on other keys, so the schema cannot hold them:
 * - fp16 dynamic loss scaling (DeepSpeed, reference/zeropp.md §2.6): when the fp16 section gives
 *   at least one of the five dynamic-scaler keys, the missing ones take DeepSpeed's config
 *   defaults (2^16, window 1000, min 1, hysteresis 2, not consecutive); when it gives none, the
 *   scaler's own defaults apply (2^32, window 1000, min 1, hysteresis 1, not consecutive);
 * - zero_optimization.overlap_comm null → true for stage 3, false otherwise;
 * - optimizer.type in lower case, as DeepSpeed compares it.
 */
import {hasKey, isPlainObject, valueAt} from "./jsonPath.js";

type ScalerKey = "initial_scale_power" | "loss_scale_window" | "min_loss_scale" | "hysteresis" | "consecutive_hysteresis";

const configScalerDefaults: Readonly<Record<ScalerKey, number | boolean>> = {
    initial_scale_power: 16,
    loss_scale_window: 1000,
    min_loss_scale: 1,
    hysteresis: 2,
    consecutive_hysteresis: false
};

const scalerOwnDefaults: Readonly<Record<ScalerKey, number | boolean>> = {
    initial_scale_power: 32,
    loss_scale_window: 1000,
    min_loss_scale: 1,
    hysteresis: 1,
    consecutive_hysteresis: false
};

export function resolveDerivedDefaults(raw: unknown, data: Record<string, unknown>): void {
    const fp16 = data["fp16"];
    if (isPlainObject(fp16)) {
        const written = valueAt(raw, ["fp16"]);
        const keys = Object.keys(configScalerDefaults) as ScalerKey[];
        const defaults = keys.some((key) => hasKey(written, key)) ? configScalerDefaults : scalerOwnDefaults;
        for (const key of keys) {
            if (fp16[key] === undefined) fp16[key] = defaults[key];
        }
    }

    const zero = data["zero_optimization"];
    if (isPlainObject(zero) && zero["overlap_comm"] === null && Number.isInteger(zero["stage"])) {
        zero["overlap_comm"] = zero["stage"] === 3;
    }

    const optimizer = data["optimizer"];
    if (isPlainObject(optimizer) && typeof optimizer["type"] === "string") {
        optimizer["type"] = optimizer["type"].toLowerCase();
    }
}

/**
 * Hugging Face "auto" values outside the batch triple (which resolveBatchSizes treats as "not
 * given"). The Trainer fills most of them from its own arguments, which mixz does not have; the
 * bucket sizes follow from the model's hidden size h as the Trainer computes them:
 * reduce_bucket_size = h·h, stage3_prefetch_bucket_size = ⌊0.9·h·h⌋,
 * stage3_param_persistence_threshold = 10·h.
 */
import {ErrorCodes} from "@mixz/protocol";
import {type JsonPath, isPlainObject, valueAt} from "./jsonPath.js";
import type {ProblemCollector} from "./ProblemCollector.js";

const bucketRules: readonly {readonly key: string; readonly fromHiddenSize: (h: number) => number}[] = [
    {key: "reduce_bucket_size", fromHiddenSize: (h) => h * h},
    {key: "stage3_prefetch_bucket_size", fromHiddenSize: (h) => Math.floor(0.9 * h * h)},
    {key: "stage3_param_persistence_threshold", fromHiddenSize: (h) => 10 * h}
];

/** Where else the schema allows "auto", and what mixz needs there instead. */
const unresolvable: readonly {readonly path: JsonPath; readonly needs: string}[] = [
    {path: ["gradient_clipping"], needs: "a number (0 turns clipping off)"},
    {path: ["fp16", "enabled"], needs: "true or false"},
    {path: ["bf16", "enabled"], needs: "true or false"},
    {path: ["optimizer", "params", "lr"], needs: "a number"},
    {path: ["optimizer", "params", "betas"], needs: "two numbers, such as [0.9, 0.999]"},
    {path: ["optimizer", "params", "eps"], needs: "a number"},
    {path: ["optimizer", "params", "weight_decay"], needs: "a number"},
    {path: ["scheduler", "params", "warmup_min_lr"], needs: "a number"},
    {path: ["scheduler", "params", "warmup_max_lr"], needs: "a number"},
    {path: ["scheduler", "params", "warmup_num_steps"], needs: "a number"},
    {path: ["scheduler", "params", "total_num_steps"], needs: "a number"}
];

export function resolveAutos(data: Record<string, unknown>, hiddenSize: number | undefined, problems: ProblemCollector): void {
    const zero = data["zero_optimization"];
    if (isPlainObject(zero)) {
        for (const {key, fromHiddenSize} of bucketRules) {
            if (zero[key] !== "auto") continue;
            if (hiddenSize === undefined) {
                problems.error(
                    ErrorCodes.configUnresolvedAuto,
                    ["zero_optimization", key],
                    "\"auto\" needs the model's hidden size: pass --hidden-size or give a number"
                );
            } else {
                zero[key] = fromHiddenSize(hiddenSize);
            }
        }
    }
    for (const {path, needs} of unresolvable) {
        if (valueAt(data, path) === "auto") {
            problems.error(
                ErrorCodes.configUnresolvedAuto,
                path,
                `"auto" is filled in by the Hugging Face Trainer from its arguments, which mixz does not have; give ${needs}`
            );
        }
    }
}

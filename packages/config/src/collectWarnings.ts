/**
 * Warnings for what a config may contain but mixz does not act on: DeepSpeed keys mixz ignores,
 * keys DeepSpeed has deprecated, and offload devices (mixz does not offload yet).
 */
import {ConfigWarningCodes} from "./api.js";
import {loadConfigSchema} from "./configSchema.js";
import {hasKey, isPlainObject, valueAt} from "./jsonPath.js";
import type {ProblemCollector} from "./ProblemCollector.js";

/** Deprecated zero_optimization keys and what replaces them in DeepSpeed. */
export const deprecatedZeroKeys: ReadonlyMap<string, string | undefined> = new Map([
    ["cpu_offload", "offload_optimizer"],
    ["cpu_offload_param", "offload_param"],
    ["cpu_offload_use_pin_memory", "offload_param.pin_memory and offload_optimizer.pin_memory"],
    ["elastic_checkpoint", undefined],
    ["legacy_stage1", undefined],
    ["pipeline_loading_checkpoint", undefined]
]);

/** Top-level keys that the schema accepts with any value and mixz ignores (those referring to definitions/ignored). */
export function ignoredTopLevelKeys(): string[] {
    const properties = loadConfigSchema()["properties"];
    if (!isPlainObject(properties)) return [];
    return Object.keys(properties).filter((key) => {
        const schema = properties[key];
        return isPlainObject(schema) && schema["$ref"] === "#/definitions/ignored";
    });
}

export function collectWarnings(raw: unknown, problems: ProblemCollector, options: {readonly engine: boolean}): void {
    const ignored = (key: string): string => `${JSON.stringify(key)} is accepted for DeepSpeed compatibility and ignored by mixz`;
    for (const key of ignoredTopLevelKeys()) {
        if (hasKey(raw, key)) problems.warn(ConfigWarningCodes.ignoredKey, [key], ignored(key));
    }

    const zero = valueAt(raw, ["zero_optimization"]);
    for (const [key, replacement] of deprecatedZeroKeys) {
        if (!hasKey(zero, key) || problems.hasErrorAt(["zero_optimization", key])) continue;
        const instead = replacement === undefined ? "" : ` (use ${replacement})`;
        problems.warn(ConfigWarningCodes.deprecatedKey, ["zero_optimization", key], `${JSON.stringify(key)} is deprecated by DeepSpeed${instead} and ignored by mixz`);
    }
    const oldGather = "stage3_gather_fp16_weights_on_model_save";
    if (hasKey(zero, oldGather) && !problems.hasErrorAt(["zero_optimization", oldGather])) {
        problems.warn(
            ConfigWarningCodes.deprecatedKey,
            ["zero_optimization", oldGather],
            `${JSON.stringify(oldGather)} is deprecated by DeepSpeed; write "stage3_gather_16bit_weights_on_model_save"`
        );
    }

    const torchAdam = ["optimizer", "params", "torch_adam"];
    if (hasKey(valueAt(raw, ["optimizer", "params"]), "torch_adam") && !problems.hasErrorAt(torchAdam)) {
        problems.warn(ConfigWarningCodes.ignoredKey, torchAdam, ignored("torch_adam"));
    }

    // For the engine an offload device is an error (checkEngineSupport.ts), not a warning.
    for (const [section, what] of options.engine ? [] : ([
        ["offload_param", "parameters"],
        ["offload_optimizer", "optimizer states"]
    ] as const)) {
        const path = ["zero_optimization", section, "device"];
        const device = valueAt(raw, path);
        if (typeof device === "string" && device !== "none" && !problems.hasErrorAt(path)) {
            problems.warn(
                ConfigWarningCodes.noOffload,
                path,
                `mixz does not offload yet: ${what} stay in accelerator memory (device ${JSON.stringify(device)} is ignored)`,
                "value"
            );
        }
    }
}

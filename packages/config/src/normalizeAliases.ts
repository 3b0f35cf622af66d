/**
 * Folds DeepSpeed's alternative key names into the canonical ones.
 *
 * DeepSpeed's ZeRO model has fields such as `prefetch_bucket_size` with the documented alias
 * `stage3_prefetch_bucket_size`, and accepts either; mixz outputs the documented (stage3_) names.
 * `bfloat16` is the old name of `bf16`; `stage3_gather_fp16_weights_on_model_save` a deprecated
 * name of `stage3_gather_16bit_weights_on_model_save`. Giving two names of one setting is an error
 * (as in DeepSpeed), whatever the values.
 *
 * Presence is judged on the document as written (`raw`), because the schema pass has already
 * filled defaults into `data` under the canonical names.
 */
import {ErrorCodes} from "@mixz/protocol";
import {type JsonPath, hasKey, isPlainObject, valueAt} from "./jsonPath.js";
import type {ProblemCollector} from "./ProblemCollector.js";

export interface AliasGroup {
    /** The object holding the keys ([] for the top level). */
    readonly section: JsonPath;
    readonly canonical: string;
    readonly aliases: readonly string[];
}

export const aliasGroups: readonly AliasGroup[] = [
    {section: [], canonical: "bf16", aliases: ["bfloat16"]},
    ...(
        [
            ["stage3_prefetch_bucket_size", "prefetch_bucket_size"],
            ["stage3_param_persistence_threshold", "param_persistence_threshold"],
            ["stage3_model_persistence_threshold", "model_persistence_threshold"],
            ["stage3_max_live_parameters", "max_live_parameters"],
            ["stage3_max_reuse_distance", "max_reuse_distance"],
            ["stage3_gather_16bit_weights_on_model_save", "gather_16bit_weights_on_model_save", "stage3_gather_fp16_weights_on_model_save"],
            ["stage3_module_granularity_threshold", "module_granularity_threshold"],
            ["stage3_use_all_reduce_for_fetch_params", "use_all_reduce_for_fetch_params"]
        ] as const
    ).map(([canonical, ...aliases]) => ({section: ["zero_optimization"], canonical, aliases}))
];

/** Moves alias values to canonical keys in `data`, reporting two names of one setting as a conflict. */
export function normalizeAliases(raw: unknown, data: Record<string, unknown>, problems: ProblemCollector): void {
    for (const {section, canonical, aliases} of aliasGroups) {
        const written = valueAt(raw, section);
        const target = valueAt(data, section);
        if (!isPlainObject(written) || !isPlainObject(target)) continue;
        const names = [canonical, ...aliases];
        // Object key order is document order (none of these keys looks like an array index).
        const present = Object.keys(written).filter((key) => names.includes(key) && hasKey(written, key));
        const first = present[0];
        for (const later of present.slice(1)) {
            const line = problems.lineOf([...section, first!]);
            const other = line === undefined ? "" : ` (${JSON.stringify(first)} is at line ${line})`;
            const names =
                later === canonical || first === canonical
                    ? `${JSON.stringify(later === canonical ? first : later)} is another name of ${JSON.stringify(canonical)}`
                    : `${JSON.stringify(later)} and ${JSON.stringify(first)} are both names of ${JSON.stringify(canonical)}`;
            problems.error(ErrorCodes.configConflict, [...section, later], `${names}; give only one of them${other}`, "key");
        }
        if (present.length === 1 && first !== canonical && first !== undefined) {
            target[canonical] = target[first];
            problems.rename([...section, canonical], [...section, first]);
        }
        for (const alias of aliases) delete target[alias];
    }
}

/**
 * Rules that relate several keys, or keys and the job's topology (DeepSpeed's own assertions, and
 * hpZ groups that must not span nodes). Every broken rule is reported; a rule whose inputs the
 * schema pass already rejected is skipped.
 *
 * Vocabulary: h is zero_hpz_partition_size (ranks per hpZ group), "world" the data-parallel world
 * size, a "node" one host's ranks.
 */
import {ErrorCodes} from "@mixz/protocol";
import {ConfigWarningCodes, UncheckedRules} from "./api.js";
import {type JsonPath, valueAt} from "./jsonPath.js";
import type {ProblemCollector} from "./ProblemCollector.js";
import type {Topology} from "./topologyFromContext.js";

const Z = "zero_optimization";

export function checkCrossFieldRules(data: Record<string, unknown>, topology: Topology, problems: ProblemCollector): void {
    const read = <T>(path: JsonPath, is: (value: unknown) => value is T): T | undefined => {
        const value = valueAt(data, path);
        return is(value) && !problems.hasErrorAt(path) ? value : undefined;
    };
    const int = (path: JsonPath): number | undefined => read(path, isInteger);
    const num = (path: JsonPath): number | undefined => read(path, isNumber);
    const bool = (path: JsonPath): boolean | undefined => read(path, isBoolean);
    const conflict = (path: JsonPath, message: string): void => problems.error(ErrorCodes.configConflict, path, message);

    // fp16 xor bf16.
    if (bool(["fp16", "enabled"]) === true && bool(["bf16", "enabled"]) === true) {
        const line = problems.lineOf(["fp16", "enabled"], "value");
        const at = line === undefined ? "" : ` (line ${line})`;
        conflict(["bf16", "enabled"], `fp16.enabled${at} and bf16.enabled are both true; enable at most one`);
    }

    const stage = int([Z, "stage"]);
    if (stage !== undefined) {
        // ZeRO++ features live in the stage-3 engine.
        const needsStage3: readonly (readonly [string, string])[] = [
            ["zero_quantized_weights", "qwZ"],
            ["zero_quantized_nontrainable_weights", "MixZ++ (quantized nontrainable weights)"],
            ["zero_quantized_gradients", "qgZ"]
        ];
        for (const [key, feature] of needsStage3) {
            if (bool([Z, key]) === true && stage !== 3) conflict([Z, key], `${feature} needs zero_optimization.stage 3, got stage ${stage}`);
        }

        // DeepSpeed's stage 3 asserts these when it reduce-scatters gradients.
        if (stage === 3 && bool([Z, "reduce_scatter"]) === true) {
            const factor = num(["gradient_predivide_factor"]);
            if (factor !== undefined && factor !== 1) {
                conflict(["gradient_predivide_factor"], `must be 1.0 with zero_optimization.stage 3 and reduce_scatter true, got ${factor}`);
            }
            if (bool(["prescale_gradients"]) === true) {
                conflict(["prescale_gradients"], "must be false with zero_optimization.stage 3 and reduce_scatter true");
            }
        }

        // DeepSpeed reads fp16_master_weights_and_grads only when fp16 is enabled, and then needs stage 2.
        if (bool(["fp16", "enabled"]) === true && bool(["fp16", "fp16_master_weights_and_grads"]) === true && stage !== 2) {
            conflict(["fp16", "fp16_master_weights_and_grads"], `needs zero_optimization.stage 2, got stage ${stage}`);
        }

        const ratio = num([Z, "offload_optimizer", "ratio"]);
        if (ratio !== undefined && ratio < 1 && stage !== 3) {
            conflict([Z, "offload_optimizer", "ratio"], `${ratio} (partial offload) needs zero_optimization.stage 3, got stage ${stage}`);
        }
    }

    const h = int([Z, "zero_hpz_partition_size"]);
    if (h !== undefined && h > 1 && stage !== undefined) {
        checkHpz(h, stage, topology, problems);
    }
}

/** hpZ: the group of h ranks holds a secondary partition and must sit inside one node. */
function checkHpz(h: number, stage: number, topology: Topology, problems: ProblemCollector): void {
    const path = [Z, "zero_hpz_partition_size"];
    const conflict = (message: string): void => problems.error(ErrorCodes.configConflict, path, message);
    if (stage !== 3) {
        conflict(`hpZ needs zero_optimization.stage 3, got stage ${stage}`);
        return;
    }
    const {world, nodeSizes, gpusPerNode} = topology;
    if (world === undefined) problems.note(UncheckedRules.hpzWorld);
    if (nodeSizes === undefined && gpusPerNode === undefined) problems.note(UncheckedRules.hpzNode);
    for (const message of hpzPlacementConflicts(h, topology)) conflict(message);

    const oneNode = nodeSizes !== undefined ? nodeSizes.length === 1 : gpusPerNode !== undefined && world !== undefined && world <= gpusPerNode;
    if (oneNode) {
        problems.warn(
            ConfigWarningCodes.hpzOneNode,
            path,
            "hpZ has nothing to save within one node: every gather already stays in the node; leave zero_hpz_partition_size unset (1) on one node",
            "value"
        );
    }
}

function isInteger(value: unknown): value is number {
    return Number.isInteger(value);
}

function isNumber(value: unknown): value is number {
    return typeof value === "number" && Number.isFinite(value);
}

function isBoolean(value: unknown): value is boolean {
    return typeof value === "boolean";
}

/**
 * Where h ranks per hpZ group do not fit the world: h must divide the world size and every node's
 * ranks (a group stays within one node). The one statement of the rule: the config's cross-field
 * check and `mixz bench --hpz` both use it. Facts not given are not checked.
 */
export function hpzPlacementConflicts(h: number, topology: {readonly world?: number | undefined; readonly nodeSizes?: readonly number[] | undefined; readonly gpusPerNode?: number | undefined}): string[] {
    const out: string[] = [];
    const {world, nodeSizes, gpusPerNode} = topology;
    if (world !== undefined && world % h !== 0) out.push(`${h} does not divide world size ${world}`);
    const span = "; an hpZ group must stay within one node";
    if (nodeSizes !== undefined) {
        const largest = Math.max(...nodeSizes);
        if (h > largest) {
            const ranks = nodeSizes.length === 1 ? `the ${largest} ranks of the only node` : `the ${largest} ranks of the largest node`;
            out.push(`${h} is more than ${ranks}${span}`);
        } else {
            const uneven = nodeSizes.flatMap((size, node) => (size % h === 0 ? [] : [`node ${node} (${size} ranks)`]));
            if (uneven.length > 0) out.push(`${h} does not divide the ranks of ${uneven.join(", ")}${span}`);
        }
    } else if (gpusPerNode !== undefined) {
        if (h > gpusPerNode) out.push(`${h} is more than the ${gpusPerNode} ranks per node${span}`);
        else if (gpusPerNode % h !== 0) out.push(`${h} does not divide the ${gpusPerNode} ranks per node${span}`);
    }
    return out;
}

/**
 * The facts about the job that world-dependent rules need, taken from a ConfigContext and
 * checked (they come from flags or a launch plan, so a bad one is the caller's input error).
 */
import {ErrorCodes, InputError, type Problem} from "@mixz/protocol";
import type {ConfigContext} from "./api.js";

export interface Topology {
    /** Data-parallel world size, when known. */
    readonly world: number | undefined;
    /** Ranks on each node, when a launch plan gave them. */
    readonly nodeSizes: readonly number[] | undefined;
    /** Ranks per node when nodes are uniform. */
    readonly gpusPerNode: number | undefined;
    readonly hiddenSize: number | undefined;
}

export function topologyFromContext(context: ConfigContext): Topology {
    const problems: Problem[] = [];
    const positive = (name: string, value: number | undefined): number | undefined => {
        if (value === undefined) return undefined;
        if (Number.isSafeInteger(value) && value >= 1) return value;
        problems.push({code: ErrorCodes.usage, path: name, message: `must be a positive integer, got ${String(value)}`});
        return undefined;
    };
    let world = positive("worldSize", context.worldSize);
    const gpusPerNode = positive("gpusPerNode", context.gpusPerNode);
    const hiddenSize = positive("hiddenSize", context.hiddenSize);
    let nodeSizes: readonly number[] | undefined;
    if (context.nodeSizes !== undefined) {
        if (context.nodeSizes.length === 0) {
            problems.push({code: ErrorCodes.usage, path: "nodeSizes", message: "must name at least one node"});
        } else if (context.nodeSizes.every((size, i) => positive(`nodeSizes[${i}]`, size) !== undefined)) {
            nodeSizes = context.nodeSizes;
            const sum = nodeSizes.reduce((a, b) => a + b, 0);
            if (world === undefined) world = sum;
            else if (world !== sum) {
                problems.push({
                    code: ErrorCodes.usage,
                    path: "worldSize",
                    message: `world size ${world} does not match the node sizes ${nodeSizes.join(" + ")} = ${sum}`
                });
            }
        }
    }
    if (problems.length > 0) throw new InputError(problems);
    return {world, nodeSizes, gpusPerNode, hiddenSize};
}

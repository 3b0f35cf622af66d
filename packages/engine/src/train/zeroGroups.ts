/**
 * The ZeRO++ policy: which communication groups an engine needs besides its world, decided from
 * the config and the world's members, and built. ZeroEngine.create is its only caller; nothing
 * above the engine (the `mixz` facade, scripts) decides or builds groups.
 *
 * - hpZ (zero_hpz_partition_size = h): secondary partitions over consecutive blocks of h ranks,
 *   each block inside one node. Active when 1 < h < world: h = 1 is plain ZeRO-3, and h = world
 *   would hold a second copy of what the primary partition already holds. The config's cross-field
 *   rules made sure h divides the world and every node (@mixz/config's hpzPartitionProblem).
 * - qgZ (zero_quantized_gradients): gradients reduced inside the node first (the node group: every
 *   rank of this node, which is the hpZ group itself when h = ranks per node), then int4 across
 *   nodes (the cross group: this local rank on every node). Needs more than one node and the same
 *   number of ranks on every node; otherwise the plain reduce-scatter runs (with a warning when
 *   the nodes are uneven; one node has nothing to quantize).
 *
 * The decision is a pure function of facts every rank shares (the config, the world's member
 * list), so every rank calls the same group() collectives in the same order.
 */
import type {ResolvedConfig} from "@mixz/config";

import {CollectiveTags} from "../comm/collectiveTags.js";
import type {CommMember, Communicator} from "../comm/Communicator.js";

/** What an engine runs with; exposed as ZeroEngine.zeroPlusPlus. */
export interface ZeroPlusPlusPlan {
    /** Ranks per hpZ group; 1 when hpZ is off (h ≤ 1 or h = world). */
    readonly hpzSize: number;
    /** qgZ runs: gradients are reduced in two levels (zero_quantized_gradients, uniform nodes, > 1 node). */
    readonly quantizedGradients: boolean;
    /** Nodes (plan hosts) of the world. */
    readonly nodes: number;
    /** Ranks on this rank's node. */
    readonly ranksPerNode: number;
    /** Why zero_quantized_gradients is on in the config but not running; null otherwise. */
    readonly quantizedGradientsFallback: string | null;
}

/** The one hpZ-active test: secondary partitions exist only for 1 < h < world. */
export function hpzActive(h: number, worldSize: number): boolean {
    return h > 1 && h < worldSize;
}

/** Decides the groups from the config and the world's members (the same on every rank). */
export function planZeroPlusPlus(config: ResolvedConfig, members: readonly CommMember[], rank: number): ZeroPlusPlusPlan {
    const zero = config.zero_optimization;
    const worldSize = members.length;
    const perHost = new Map<string, number>();
    for (const member of members) perHost.set(member.host, (perHost.get(member.host) ?? 0) + 1);
    const ranksPerNode = perHost.get(members[rank]!.host)!;
    const counts = [...perHost.values()];
    const nodes = counts.length;
    const h = zero.zero_hpz_partition_size;
    let fallback: string | null = null;
    if (zero.zero_quantized_gradients) {
        // One node: nothing crosses nodes, so there is nothing to quantize (and nothing to warn about).
        if (nodes > 1 && counts.some((n) => n !== counts[0])) fallback = "zero_quantized_gradients needs the same number of ranks on every node; gradients use the plain reduce-scatter";
    }
    return {
        hpzSize: hpzActive(h, worldSize) ? h : 1,
        quantizedGradients: zero.zero_quantized_gradients && nodes > 1 && fallback === null,
        nodes,
        ranksPerNode,
        quantizedGradientsFallback: fallback
    };
}

/** The groups of a plan, each communicator once (node may be the hpZ group itself). */
export interface ZeroGroups {
    readonly hpz: Communicator | null;
    readonly node: Communicator | null;
    readonly cross: Communicator | null;
}

/** Builds a plan's groups from the world; a collective. On a failure nothing built is left open. */
export async function buildZeroGroups(world: Communicator, plan: ZeroPlusPlusPlan, timeoutMs: number): Promise<ZeroGroups> {
    const tags = CollectiveTags.groups;
    let hpz: Communicator | null = null;
    let node: Communicator | null = null;
    let cross: Communicator | null = null;
    try {
        if (plan.hpzSize > 1) hpz = await world.group("hpz", plan.hpzSize, {tag: tags.hpz, timeoutMs});
        if (plan.quantizedGradients) {
            const perNode = plan.ranksPerNode;
            node = perNode === plan.hpzSize && hpz !== null ? hpz : perNode > 1 ? await world.group("hpz", perNode, {tag: tags.qgzNode, timeoutMs}) : null;
            cross = await world.group("cross", {tag: tags.qgzCross, timeoutMs});
        }
        return {hpz, node, cross};
    } catch (error) {
        await disposeGroups({hpz, node, cross});
        throw error;
    }
}

/** Disposes every group once; the first failure is thrown after all were tried. */
export async function disposeGroups(groups: ZeroGroups): Promise<void> {
    const unique = [...new Set([groups.hpz, groups.node, groups.cross])].filter((c): c is Communicator => c !== null);
    const results = await Promise.allSettled(unique.map((c) => c.dispose()));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed !== undefined) throw failed.reason;
}

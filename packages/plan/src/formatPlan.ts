import {formatIdList} from "./formatIdList.js";
import type {WorldPlan} from "./WorldPlan.js";

/** How an SSH node will be reached, after ~/.ssh/config (shown by `--dry-run`). */
export interface SshReach {
    readonly user: string;
    readonly hostName: string;
    readonly port: number;
}

/**
 * The plan as the one-line JSON object of DESIGN.md §4 (`--dry-run --json`). SSH nodes carry an
 * extra `ssh` object ({user, host_name, port}) when `reach` knows them; the contract's fields are
 * unchanged.
 */
export function formatPlanJson(plan: WorldPlan, reach: ReadonlyMap<string, SshReach> = new Map()): string {
    return JSON.stringify({
        world_size: plan.world_size,
        master_addr: plan.master_addr,
        master_port: plan.master_port,
        nodes: plan.nodes.map((node) => ({
            host: node.host,
            node_rank: node.node_rank,
            slots: node.slots,
            ranks: node.ranks,
            local_ranks: node.local_ranks,
            spawn: node.spawn,
            ...sshJson(reach.get(node.host))
        }))
    });
}

function sshJson(reach: SshReach | undefined): {ssh?: {user: string; host_name: string; port: number}} {
    return reach === undefined ? {} : {ssh: {user: reach.user, host_name: reach.hostName, port: reach.port}};
}

/** The plan as a readable table (`--dry-run` without `--json`); SSH nodes show user@host:port. */
export function formatPlanTable(plan: WorldPlan, reach: ReadonlyMap<string, SshReach> = new Map()): string {
    const port = plan.master_port === 0 ? "0 (a free port at launch)" : String(plan.master_port);
    const nodes = plan.nodes.length === 1 ? "1 node" : `${plan.nodes.length} nodes`;
    const header = ["node", "host", "spawn", "slots", "ranks", "local ranks"];
    const spawn = (node: WorldPlan["nodes"][number]): string => {
        const via = reach.get(node.host);
        return via === undefined ? node.spawn : `ssh ${via.user}@${via.hostName}:${via.port}`;
    };
    const rows = plan.nodes.map((node) => [
        String(node.node_rank),
        node.host,
        spawn(node),
        formatIdList(node.slots),
        formatIdList(node.ranks),
        formatIdList(node.local_ranks)
    ]);
    const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
    const line = (cells: readonly string[]): string =>
        cells.map((cell, column) => (column === 0 ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!))).join("  ").trimEnd();
    return [
        `world size ${plan.world_size} on ${nodes}; coordinator ${plan.master_addr}:${port}`,
        line(header),
        ...rows.map(line)
    ].join("\n");
}

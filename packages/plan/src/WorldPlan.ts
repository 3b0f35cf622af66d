/**
 * The world plan: which ranks run where. Its shape is the JSON contract of
 * `mixz launch --dry-run --json` (DESIGN.md §4), so the field names are snake_case on purpose.
 */
export interface PlanNode {
    /** Host name as written in the hostfile (or `localhost` without one). */
    readonly host: string;
    /** Index of the node in hostfile order (DeepSpeed's node rank, CROSS_RANK). */
    readonly node_rank: number;
    /** Slot ids used on this host (GPU ids on GPU hosts: CUDA_VISIBLE_DEVICES). */
    readonly slots: readonly number[];
    /** Global ranks, assigned node by node in hostfile order. */
    readonly ranks: readonly number[];
    /**
     * LOCAL_RANK of each rank: the index of its slot in this node's slot list. DeepSpeed uses
     * `RANK % LOCAL_SIZE`, which differs on nodes with unequal slot counts (ranks 4,5,6 on a
     * 3-slot node get 1,2,0 there); the index is what indexes CUDA_VISIBLE_DEVICES correctly.
     */
    readonly local_ranks: readonly number[];
    /** How the launcher starts this node's ranks. */
    readonly spawn: "local" | "ssh";
}

export interface WorldPlan {
    readonly world_size: number;
    /** Address of the coordinator (the launcher's machine) as the ranks will dial it. */
    readonly master_addr: string;
    /** Coordinator port; 0 means a free port is picked at launch. */
    readonly master_port: number;
    readonly nodes: readonly PlanNode[];
}

/** DeepSpeed's and torchrun's default port. */
export const kDefaultMasterPort = 29500;

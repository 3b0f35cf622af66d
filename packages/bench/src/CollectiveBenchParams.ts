import type {CommTransport, FloatDType} from "@mixz/engine";
import type {BenchCollective} from "./busBandwidth.js";

/** What the CLI hands every rank of `mixz bench allgather|reducescatter` (one JSON argument). */
export interface CollectiveBenchParams {
    readonly collective: BenchCollective;
    readonly sizes: readonly number[];
    readonly dtype: FloatDType;
    readonly quant: "none" | "int8" | "int4";
    readonly blockSize: number;
    readonly iterations: number;
    readonly warmup: number;
    readonly check: boolean;
    /** 0 or 1: the world; h > 1: the hpZ group of h consecutive ranks (the intra-node path). */
    readonly hpz: number;
    readonly transport: CommTransport;
    readonly timeoutMs: number;
}

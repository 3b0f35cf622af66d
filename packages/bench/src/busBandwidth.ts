/** The collectives `mixz bench` measures. */
export type BenchCollective = "allgather" | "reducescatter";

/**
 * Bandwidths in GB/s (10^9 bytes/s) for one row, following nccl-tests' PERFORMANCE.md: algbw is
 * the total array size (count × element bytes × ranks) over the time; busbw scales it by the
 * fraction of the data every rank has to move, (n−1)/n for all-gather and reduce-scatter, so that
 * figures compare across rank counts and against the link's speed.
 */
export function busBandwidth(collective: BenchCollective, count: number, elementBytes: number, ranks: number, seconds: number): {algbw: number; busbw: number} {
    const bytes = count * elementBytes * ranks;
    const algbw = seconds > 0 ? bytes / 1e9 / seconds : 0;
    const factor = collective === "allgather" || collective === "reducescatter" ? (ranks - 1) / ranks : 1;
    return {algbw, busbw: algbw * factor};
}

/**
 * The engine's defaults that no config key states (the DeepSpeed keys' defaults live in
 * configs/ds_config.schema.json and reach the engine through @mixz/config). One place: the native
 * side gets every value in its descriptor and restates none.
 */
export const engineDefaults = {
    /** Bounds rendezvous and every collective of an engine (initialize, ZeroEngine.create). */
    timeoutMs: 120_000,
    /** Threads for the engine's kernels when the launcher set no OMP_NUM_THREADS. */
    kernelThreads: 1
} as const;

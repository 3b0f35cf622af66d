/**
 * Every collective tag of mixz's engine, in one registry: a tag names a collective in timeouts and
 * errors ("timed out after 120 s in all-gather tag 7104 waiting for rank 2"), and members of one
 * collective must pass the same tag. Nothing else in the engine writes a tag literal.
 *
 * The native engine's own tags live in its C++ header `native/include/mixz/zero/collective_tags.h`
 * inside `nativeEngineTagRange` (the TS side never passes them; packages/engine/test/comm/
 * collectiveTags.test.ts checks that header against this range and that no two tags collide).
 */

/** Tags the native ZeRO engine uses on its communication thread (see the C++ header). */
export const nativeEngineTagRange = {first: 7001, last: 7099} as const;

export const CollectiveTags = {
    /** checkpoint.ts: save (rank 0 prepared, every rank's file written, rank 0 published) and load. */
    checkpoint: {prepared: 7101, filesWritten: 7102, published: 7103, loadReady: 7104},
    /** pretrained.ts: export (prepared, next tensor, tensor data, written, published) and load. */
    pretrained: {exportPrepared: 7111, exportNext: 7112, exportData: 7113, exportWritten: 7114, exportPublished: 7115, loadReady: 7116},
    /** peftAdapter.ts: every rank read its adapter slices. */
    peftAdapter: {loadReady: 7121},
    /** train/zeroGroups.ts: building the ZeRO++ groups (hpZ, qgZ's node and cross groups) from the world. */
    groups: {hpz: 7200, qgzNode: 7201, qgzCross: 7202}
} as const;

type Leaves<T> = T extends number ? T : {[K in keyof T]: Leaves<T[K]>}[keyof T];
export type CollectiveTag = Leaves<typeof CollectiveTags>;

/** Every registered tag with its name ("checkpoint.prepared"), for the collision test and errors. */
export function registeredTags(): readonly {readonly name: string; readonly tag: number}[] {
    const out: {name: string; tag: number}[] = [];
    for (const [area, tags] of Object.entries(CollectiveTags)) {
        for (const [name, tag] of Object.entries(tags)) out.push({name: `${area}.${name}`, tag});
    }
    return out;
}

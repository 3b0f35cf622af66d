/**
 * Checkpoints of the ZeRO-3 engine, laid out as DeepSpeed lays out its own:
 *
 *   dir/
 *     latest                      the tag of the newest complete checkpoint (no newline)
 *     <tag>/                      one complete checkpoint (tag default: global_step<N>)
 *       mixz_checkpoint.json      the manifest: format, world size, dtype, model, parameters,
 *                                 counters, loss scaler, lr schedule, the rank files and sizes,
 *                                 the data position a script passed (dataPosition)
 *       rank_<r>.safetensors      the slices rank r owned
 *
 * Vocabulary:
 *   - *slice*: a rank's unpadded part [sliceBegin, sliceBegin + sliceLength) of a flattened
 *     parameter. The world that wrote a checkpoint is the *old world*; its rank k held elements
 *     [k·p, min((k+1)·p, numel)) with the *old partition* p = ceil(numel / old world size).
 *   - *rank file*: rank_<r>.safetensors. For every parameter it holds 1-D tensors of rank r's
 *     slice: `<name>` in the model dtype (F32, F16 or BF16), `<name>::master` (F32, only when the
 *     model dtype is not fp32), `<name>::exp_avg` and `<name>::exp_avg_sq` (F32, Adam's moments).
 *     Its __metadata__ names the format, rank, world size, dtype and tag.
 *   - *staging directory*: dir/.<tag>.tmp-<nonce>, where a save writes before it is published;
 *     the nonce is drawn by rank 0 and broadcast, so every rank agrees on it.
 *   - *aside directory*: dir/.<tag>.old-<nonce>, an older checkpoint with the same tag, moved
 *     aside while the new one is renamed in.
 *
 * Save (a collective; every rank calls it at the same point):
 *   1. rank 0 creates dir, clears leftovers of crashed saves (below) and creates the staging
 *      directory, then broadcasts {ok, nonce};
 *   2. every rank writes its rank file there (writeSafetensors: temporary file, fsync, rename,
 *      fsync of the directory) — stage "rank-files-written" — and the ranks all-gather ok flags;
 *   3. rank 0 writes and fsyncs the manifest and fsyncs the staging directory — stage
 *      "manifest-written" —, moves an existing dir/<tag> aside, renames the staging directory to
 *      dir/<tag>, fsyncs dir — stage "renamed" —, deletes the aside directory, then replaces
 *      `latest` atomically (temporary file, fsync, rename, fsync of dir) and broadcasts {ok}.
 * Every collective carries a status, so a rank that fails makes every rank throw instead of
 * leaving the others waiting for a collective that never comes.
 *
 * Crash safety: until the rename in step 3 nothing outside the staging directory changes, and
 * `latest` changes only after the new checkpoint is complete and durable, so a SIGKILL at any
 * point leaves `latest` naming a complete checkpoint. The one window where dir/<tag> is missing
 * (replacing a checkpoint of the same tag: after moving the old one aside, before renaming the new
 * one in) is covered by the aside directory: loads read it when dir/<tag> is missing, and the next
 * save renames it back. Leftover staging directories and `latest` temporaries are deleted by the
 * next save and ignored by loads.
 *
 * Load reads the manifest and, on each rank, only the element ranges of the rank files that the
 * rank's own slices need (several old rank files when the world size changed: re-partitioning),
 * validates everything into memory, agrees with every rank that all succeeded, and only then
 * writes the slices and the training state: an error leaves the engine as it was, on every rank.
 *
 * Filesystem: every rank reads and writes `dir` itself, so a job spanning several hosts needs
 * `dir` on a filesystem all of them share (NFS, Lustre, …) where rename within a directory is
 * atomic; rank 0 checks that it sees every rank's file before publishing. One job at a time may
 * save into a directory: a save deletes the staging directories it finds there.
 */
import {randomBytes} from "node:crypto";
import type {FileHandle} from "node:fs/promises";
import {mkdir, open, readdir, readFile, rename, rm, stat} from "node:fs/promises";
import {join} from "node:path";

import {ErrorCodes, InputError, MixzError, type Problem} from "@mixz/protocol";

import type {NativeModelDType, NativeParamInfo, NativeSliceKind} from "../binding/AddonEngineTypes.js";
import type {LlamaConfig, LlamaModel} from "../model/llama.js";
import {convertFloats} from "../quant/quantize.js";
import {readSafetensorsHeader, readTensor, writeSafetensors, type SafetensorsHeader, type SafetensorsTensor} from "../formats/safetensors.js";
import {syncDirectory, writeDurably} from "../formats/durableFiles.js";
import {errnoOf, writeError} from "../formats/fileErrors.js";
import {CollectiveTags} from "../comm/collectiveTags.js";
import {everyRankTries, rootTries} from "../comm/ranksAgree.js";

/** The points of a save at which `onStage` is called (see the module comment). */
export type CheckpointStage = "rank-files-written" | "manifest-written" | "renamed";

export interface SaveCheckpointOptions {
    /** The checkpoint's name under dir; default `global_step<globalSteps>`, as DeepSpeed names them. */
    readonly tag?: string;
    /** Whether `latest` names this checkpoint afterwards; default true. */
    readonly saveLatest?: boolean;
    /**
     * Called at each stage of the save, for crash tests: "rank-files-written" on every rank (its
     * own file is durable, before the ranks meet), "manifest-written" and "renamed" on rank 0.
     */
    readonly onStage?: (stage: CheckpointStage) => void | Promise<void>;
    /**
     * Where the training data stands (e.g. data.jsonl's batches.position()): any JSON value, stored
     * in the manifest as rank 0 passes it (a data position is global: the same on every rank) and
     * returned by loadCheckpoint as `dataPosition`.
     */
    readonly dataPosition?: unknown;
}

export interface LoadCheckpointOptions {
    /** The checkpoint to load; default the tag in dir/latest. */
    readonly tag?: string;
}

/** What a save wrote or a load read. */
export interface CheckpointInfo {
    readonly tag: string;
    /** dir/<tag>. */
    readonly path: string;
    /** The world size that wrote the checkpoint. */
    readonly worldSize: number;
    readonly dtype: NativeModelDType;
    readonly globalSteps: number;
    /** The dataPosition the save was given; absent when it was given none. */
    readonly dataPosition?: unknown;
}

/** The engine's counters and policy state (ZeroEngine.trainingState()). */
export interface TrainingState {
    readonly globalSteps: number;
    readonly microSteps: number;
    readonly optimizerSteps: number;
    /** Training forwards so far (LoRA dropout masks); absent in older checkpoints: 0. */
    readonly trainingForwards?: number;
    readonly lossScaler: unknown;
    readonly lrScheduler: unknown;
}

/** @internal What a checkpoint needs of the engine; ZeroEngine hands one out while it is busy with the checkpoint. */
export interface CheckpointAccess {
    readonly rank: number;
    readonly worldSize: number;
    readonly dtype: NativeModelDType;
    readonly model: LlamaModel;
    readonly parameters: readonly NativeParamInfo[];
    readonly gradientAccumulationSteps: number;
    readSlice(index: number, kind: NativeSliceKind): Float32Array;
    writeSlice(index: number, kind: Exclude<NativeSliceKind, "grad">, values: Float32Array): void;
    trainingState(): TrainingState;
    /** Validates a saved state (throws MIXZ_ERR_CHECKPOINT_STATE); the returned function applies it. */
    prepareTrainingState(state: TrainingState): () => void;
    /** Every rank's `buffer` receives rank 0's. */
    broadcast(buffer: Uint32Array, tag: number): Promise<void>;
    /** `output` (world × input.length) receives every rank's `input` in rank order. */
    allGather(input: Uint32Array, output: Uint32Array, tag: number): Promise<void>;
}

export const checkpointFormat = "mixz-zero3-checkpoint";
export const checkpointVersion = 1;
export const checkpointManifestName = "mixz_checkpoint.json";
export const checkpointLatestName = "latest";

const kTags = CollectiveTags.checkpoint;

const kTagPattern = /^[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,199}$/;
const kStagingPattern = /^\.(.+)\.tmp-[0-9a-f]{16}$/;
const kAsidePattern = /^\.(.+)\.old-[0-9a-f]{16}$/;

type TensorKind = "param" | "master" | "exp_avg" | "exp_avg_sq";
type ParamDType = "F32" | "F16" | "BF16";

const paramDTypeOf: Readonly<Record<NativeModelDType, ParamDType>> = {fp32: "F32", fp16: "F16", bf16: "BF16"};

/** The manifest, mixz_checkpoint.json. */
interface CheckpointManifest extends TrainingState {
    readonly format: typeof checkpointFormat;
    readonly version: number;
    readonly tag: string;
    readonly worldSize: number;
    readonly dtype: NativeModelDType;
    readonly model: {readonly kind: "llama"; readonly config: Required<LlamaConfig>};
    readonly gradientAccumulationSteps: number;
    /** The rank files' tensors: `<name>` in paramDType, `::master` when hasMaster, `::exp_avg` and `::exp_avg_sq` in F32. */
    readonly tensors: {readonly paramDType: ParamDType; readonly hasMaster: boolean};
    readonly parameters: readonly {readonly name: string; readonly shape: readonly number[]; readonly numel: number}[];
    readonly files: readonly {readonly rank: number; readonly name: string; readonly bytes: number}[];
    /** SaveCheckpointOptions.dataPosition, when given. */
    readonly dataPosition?: unknown;
}

/** The tensor name of a parameter's state in a rank file. */
function tensorName(param: string, kind: TensorKind): string {
    return kind === "param" ? param : `${param}::${kind}`;
}

function rankFileName(rank: number): string {
    return `rank_${rank}.safetensors`;
}

/** Old rank k's slice length: max(0, min((k+1)·p, numel) − k·p). */
function oldSliceLength(numel: number, oldWorld: number, k: number): number {
    const p = Math.ceil(numel / oldWorld);
    return Math.max(0, Math.min((k + 1) * p, numel) - k * p);
}

/** Where [begin, end) of a parameter lies in the old world's rank files. */
interface OldSpan {
    readonly rank: number;
    /** Elements [from, to) of old rank `rank`'s slice. */
    readonly from: number;
    readonly to: number;
    /** Where they go in the new slice. */
    readonly at: number;
}

function oldSpans(numel: number, oldWorld: number, begin: number, end: number): OldSpan[] {
    if (end <= begin) return [];
    const p = Math.ceil(numel / oldWorld);
    const spans: OldSpan[] = [];
    for (let k = Math.floor(begin / p); k < oldWorld && k * p < end; k++) {
        const lo = Math.max(begin, k * p);
        const hi = Math.min(end, (k + 1) * p, numel);
        if (hi > lo) spans.push({rank: k, from: lo - k * p, to: hi - k * p, at: lo - begin});
    }
    return spans;
}

// ---------------------------------------------------------------------------------------------
// Saving

/** Writes a checkpoint of `engine` under `dir` (see the module comment). A collective. */
export async function saveCheckpoint(engine: CheckpointAccess, dir: string, options: SaveCheckpointOptions = {}): Promise<CheckpointInfo> {
    const fn = "saveCheckpoint";
    checkDirArgument(fn, dir);
    checkOptionsObject(fn, options);
    const state = engine.trainingState();
    const tag = options.tag ?? `global_step${state.globalSteps}`;
    checkTag(fn, tag);
    if (options.onStage !== undefined && typeof options.onStage !== "function") {
        throw invalidOption(fn, `options.onStage must be a function, got ${typeof options.onStage}`);
    }
    const saveLatest = options.saveLatest ?? true;
    if (typeof saveLatest !== "boolean") throw invalidOption(fn, `options.saveLatest must be a boolean, got ${typeof saveLatest}`);
    const dataPosition = jsonCopy(fn, options.dataPosition);
    const {rank, worldSize} = engine;

    // 1. Rank 0 prepares the staging directory and tells everyone its nonce.
    const saving = {fn, target: dir, consequence: "the save did not complete (the previous checkpoint and `latest` stay loadable)", code: ErrorCodes.checkpointState, ownError: (error: unknown) => writeError(dir, error, "the checkpoint")};
    const nonceWords = await rootTries(engine, kTags.prepared, saving, async () => {
        const nonce = randomBytes(8);
        const words = Uint32Array.of(nonce.readUInt32LE(0), nonce.readUInt32LE(4));
        await mkdir(dir, {recursive: true});
        await clearLeftovers(dir);
        await mkdir(join(dir, stagingName(tag, nonceOf(words))));
        return words;
    }, 2);
    const nonce = nonceOf(nonceWords);
    const staging = join(dir, stagingName(tag, nonce));
    const target = join(dir, tag);

    // 2. Every rank writes its own file.
    await everyRankTries(engine, kTags.filesWritten, {
        ...saving,
        ownError: (error: unknown) => writeError(staging, error, "the checkpoint"),
        cleanup: async () => {
            if (rank === 0) await rm(staging, {recursive: true, force: true});
        }
    }, async () => {
        await writeSafetensors(join(staging, rankFileName(rank)), await rankTensors(engine), {
            format: checkpointFormat,
            version: String(checkpointVersion),
            rank: String(rank),
            world_size: String(worldSize),
            dtype: engine.dtype,
            tag
        });
        await options.onStage?.("rank-files-written");
    });

    // 3. Rank 0 publishes.
    await rootTries(engine, kTags.published, saving, async () => {
        const files = await rankFileSizes(staging, worldSize);
        const manifest = {...makeManifest(engine, state, tag, files), ...(dataPosition === undefined ? {} : {dataPosition})};
        await writeDurably(join(staging, checkpointManifestName), `${JSON.stringify(manifest, null, 2)}\n`);
        await syncDirectory(staging);
        await options.onStage?.("manifest-written");
        const aside = join(dir, asideName(tag, nonce));
        const replacing = await exists(target);
        if (replacing) await rename(target, aside);
        await rename(staging, target);
        await syncDirectory(dir);
        await options.onStage?.("renamed");
        if (replacing) await rm(aside, {recursive: true, force: true});
        if (saveLatest) {
            const temporary = join(dir, stagingName(checkpointLatestName, nonce));
            await writeDurably(temporary, tag);
            await rename(temporary, join(dir, checkpointLatestName));
            await syncDirectory(dir);
        }
    });
    return {tag, path: target, worldSize, dtype: engine.dtype, globalSteps: state.globalSteps, ...(dataPosition === undefined ? {} : {dataPosition})};
}

/** A JSON copy of a dataPosition (undefined stays undefined); refuses what JSON cannot hold. */
function jsonCopy(fn: string, value: unknown): unknown {
    if (value === undefined) return undefined;
    let text: string | undefined;
    try {
        text = JSON.stringify(value);
    } catch (error) {
        throw invalidOption(fn, `options.dataPosition must be a JSON value (${(error as Error).message})`);
    }
    if (text === undefined) throw invalidOption(fn, `options.dataPosition must be a JSON value, got ${typeof value}`);
    return JSON.parse(text) as unknown;
}

/** This rank's slices as rank-file tensors (1-D, unpadded). */
async function rankTensors(engine: CheckpointAccess): Promise<SafetensorsTensor[]> {
    const tensors: SafetensorsTensor[] = [];
    const dtype = engine.dtype;
    for (const [index, param] of engine.parameters.entries()) {
        const shape = [param.sliceLength];
        const values = engine.readSlice(index, "param");
        const data = dtype === "fp32" ? values : await convertFloats(values, {from: "fp32", to: dtype});
        tensors.push({name: tensorName(param.name, "param"), dtype: paramDTypeOf[dtype], shape, data});
        // Frozen parameters (LoRA's base) have no master copy and no optimizer state.
        const kinds: TensorKind[] = !param.trainable ? [] : dtype === "fp32" ? ["exp_avg", "exp_avg_sq"] : ["master", "exp_avg", "exp_avg_sq"];
        for (const kind of kinds) {
            tensors.push({name: tensorName(param.name, kind), dtype: "F32", shape, data: engine.readSlice(index, kind)});
        }
    }
    return tensors;
}

function makeManifest(engine: CheckpointAccess, state: TrainingState, tag: string, files: CheckpointManifest["files"]): CheckpointManifest {
    return {
        format: checkpointFormat,
        version: checkpointVersion,
        tag,
        worldSize: engine.worldSize,
        dtype: engine.dtype,
        model: {kind: engine.model.kind, config: engine.model.config},
        gradientAccumulationSteps: engine.gradientAccumulationSteps,
        tensors: {paramDType: paramDTypeOf[engine.dtype], hasMaster: engine.dtype !== "fp32"},
        parameters: engine.parameters.map((p) => ({name: p.name, shape: [...p.shape], numel: p.numel})),
        globalSteps: state.globalSteps,
        microSteps: state.microSteps,
        optimizerSteps: state.optimizerSteps,
        trainingForwards: state.trainingForwards ?? 0,
        lossScaler: state.lossScaler,
        lrScheduler: state.lrScheduler,
        files
    };
}

/** Sizes of every rank's file, as rank 0 sees them: a file it cannot see means `dir` is not shared. */
async function rankFileSizes(staging: string, worldSize: number): Promise<CheckpointManifest["files"]> {
    const files: {rank: number; name: string; bytes: number}[] = [];
    for (let r = 0; r < worldSize; r++) {
        const name = rankFileName(r);
        let bytes: number;
        try {
            bytes = (await stat(join(staging, name))).size;
        } catch (error) {
            throw new MixzError(
                ErrorCodes.fileWrite,
                `${join(staging, name)}: rank ${r} wrote its checkpoint file but rank 0 cannot see it (${errnoOf(error)}); ` +
                    "a checkpoint directory must be on a filesystem every host shares",
                {category: "infra", context: {path: join(staging, name), rank: r}, cause: error}
            );
        }
        files.push({rank: r, name, bytes});
    }
    return files;
}

/**
 * Deletes what crashed saves left in `dir`: staging directories and `latest` temporaries; an aside
 * directory is renamed back when its tag is missing (the crash fell between the two renames), else
 * deleted. Only rank 0 of a saving job calls this.
 */
async function clearLeftovers(dir: string): Promise<void> {
    for (const entry of await readdir(dir)) {
        if (kStagingPattern.test(entry)) {
            await rm(join(dir, entry), {recursive: true, force: true});
            continue;
        }
        const aside = kAsidePattern.exec(entry);
        if (aside === null) continue;
        const target = join(dir, aside[1]!);
        if (await exists(target)) {
            await rm(join(dir, entry), {recursive: true, force: true});
        } else {
            await rename(join(dir, entry), target);
            await syncDirectory(dir);
        }
    }
}

function stagingName(tag: string, nonce: string): string {
    return `.${tag}.tmp-${nonce}`;
}

function asideName(tag: string, nonce: string): string {
    return `.${tag}.old-${nonce}`;
}

function nonceOf(words: Uint32Array): string {
    return Array.from(words, (word) => word.toString(16).padStart(8, "0")).join("");
}



async function exists(path: string): Promise<boolean> {
    try {
        await stat(path);
        return true;
    } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
        throw error;
    }
}

// ---------------------------------------------------------------------------------------------
// Loading

/** A slice state read into memory, to be written once every rank has read everything. */
interface PendingWrite {
    readonly index: number;
    readonly kind: Exclude<NativeSliceKind, "grad">;
    readonly values: Float32Array;
}

/**
 * Loads a checkpoint into `engine` (see the module comment). A collective. With a different world
 * size the slices are re-partitioned. A checkpoint of another precision loads when its fp32
 * values exist (fp32 parameters, or the fp32 master of fp16/bf16): the engine gets those values
 * (rounded to its dtype, its master exact) and keeps its own loss scaler, which belongs to the
 * precision.
 */
export async function loadCheckpoint(engine: CheckpointAccess, dir: string, options: LoadCheckpointOptions = {}): Promise<CheckpointInfo> {
    const fn = "loadCheckpoint";
    checkDirArgument(fn, dir);
    checkOptionsObject(fn, options);
    if (options.tag !== undefined) checkTag(fn, options.tag);

    const prepared = await everyRankTries(engine, kTags.loadReady, {fn, target: dir, consequence: "nothing was loaded on any rank", code: ErrorCodes.checkpointState},
        () => prepareLoad(engine, dir, options.tag));
    for (const {index, kind, values} of prepared.writes) engine.writeSlice(index, kind, values);
    prepared.commit();
    return prepared.info;
}

async function prepareLoad(
    engine: CheckpointAccess,
    dir: string,
    requestedTag: string | undefined
): Promise<{info: CheckpointInfo; writes: PendingWrite[]; commit: () => void}> {
    if (!(await isDirectory(dir))) throw stateError(dir, `no checkpoint directory ${JSON.stringify(dir)} (it does not exist or is not a directory)`);
    const tag = requestedTag ?? (await readLatest(dir));
    const path = await tagDirectory(dir, tag);
    const manifestPath = join(path, checkpointManifestName);
    const manifest = parseManifest(manifestPath, await readText(manifestPath));
    checkCompatible(engine, manifest, manifestPath);

    // What to read: the same precision restores every state as saved; another one takes the fp32
    // values (master, or fp32 parameters) and lets the engine round them to its dtype.
    const sameDType = manifest.dtype === engine.dtype;
    const plan: {kind: Exclude<NativeSliceKind, "grad">; tensor: TensorKind}[] = sameDType
        ? [
              {kind: "param", tensor: "param"},
              ...(manifest.tensors.hasMaster ? [{kind: "master" as const, tensor: "master" as const}] : [])
          ]
        : [{kind: "param", tensor: manifest.tensors.hasMaster ? "master" : "param"}];
    plan.push({kind: "exp_avg", tensor: "exp_avg"}, {kind: "exp_avg_sq", tensor: "exp_avg_sq"});
    // Frozen parameters carry only their values; int8 frozen ones (quantizeNontrainableParams ran
    // before the load) are skipped: frozen weights never change in training, so the checkpoint holds
    // the dequantized values of what the engine already has, and re-quantizing those would quantize
    // twice (zeropp.md pitfall P7).
    const planFor = (param: (typeof engine.parameters)[number]): typeof plan =>
        param.quantized ? [] : param.trainable ? plan : plan.filter(({kind}) => kind === "param");

    const files = new RankFiles(path, manifest);
    const writes: PendingWrite[] = [];
    try {
        for (const [index, param] of engine.parameters.entries()) {
            const spans = oldSpans(param.numel, manifest.worldSize, param.sliceBegin, param.sliceBegin + param.sliceLength);
            for (const {kind, tensor} of planFor(param)) {
                const dtype: ParamDType = tensor === "param" ? manifest.tensors.paramDType : "F32";
                const name = tensorName(param.name, tensor);
                const raw = dtype === "F32" ? new Float32Array(param.sliceLength) : new Uint16Array(param.sliceLength);
                for (const span of spans) {
                    const part = await files.read(span.rank, name, dtype, oldSliceLength(param.numel, manifest.worldSize, span.rank), span);
                    raw.set(part as Float32Array & Uint16Array, span.at);
                }
                const values = raw instanceof Float32Array ? raw : await convertFloats(raw, {from: dtype === "F16" ? "fp16" : "bf16", to: "fp32"});
                writes.push({index, kind, values});
            }
        }
    } finally {
        await files.close();
    }

    // The loss scaler belongs to the precision: another precision keeps the engine's own.
    const current = engine.trainingState();
    const boundaries = Math.floor(manifest.microSteps / manifest.gradientAccumulationSteps);
    const commit = engine.prepareTrainingState({
        globalSteps: manifest.globalSteps,
        // Accumulation boundaries carry over; a different world size may accumulate differently.
        microSteps: boundaries * engine.gradientAccumulationSteps,
        optimizerSteps: manifest.optimizerSteps,
        trainingForwards: manifest.trainingForwards ?? 0,
        lossScaler: sameDType ? manifest.lossScaler : current.lossScaler,
        lrScheduler: manifest.lrScheduler
    });
    const info: CheckpointInfo = {
        tag, path, worldSize: manifest.worldSize, dtype: manifest.dtype, globalSteps: manifest.globalSteps,
        ...(manifest.dataPosition === undefined ? {} : {dataPosition: manifest.dataPosition})
    };
    return {info, writes, commit};
}

/** The rank files a load reads, each opened once, its header checked against the manifest. */
class RankFiles {
    readonly #dir: string;
    readonly #manifest: CheckpointManifest;
    readonly #open = new Map<number, Promise<{handle: FileHandle; header: SafetensorsHeader}>>();

    constructor(dir: string, manifest: CheckpointManifest) {
        this.#dir = dir;
        this.#manifest = manifest;
    }

    /** Elements [span.from, span.to) of `name` in old rank `rank`'s file, checked to be a 1-D `dtype` tensor of `length`. */
    async read(rank: number, name: string, dtype: ParamDType, length: number, span: OldSpan): Promise<Float32Array | Uint16Array> {
        const {handle, header} = await this.#file(rank);
        const info = header.tensors.get(name);
        if (info === undefined) throw fileError(header.path, `no tensor ${JSON.stringify(name)}: not a complete checkpoint file of this manifest`);
        if (info.dtype !== dtype || info.shape.length !== 1 || info.shape[0] !== length) {
            throw fileError(header.path, `tensor ${JSON.stringify(name)} is ${info.dtype} [${info.shape.join(",")}], the manifest needs ${dtype} [${length}]`);
        }
        return (await readTensor(handle, header, name, {from: span.from, to: span.to})) as Float32Array | Uint16Array;
    }

    async close(): Promise<void> {
        for (const opened of this.#open.values()) {
            await opened.then(({handle}) => handle.close()).catch(() => undefined);
        }
    }

    #file(rank: number): Promise<{handle: FileHandle; header: SafetensorsHeader}> {
        let opened = this.#open.get(rank);
        if (opened === undefined) {
            opened = this.#openFile(rank);
            this.#open.set(rank, opened);
        }
        return opened;
    }

    async #openFile(rank: number): Promise<{handle: FileHandle; header: SafetensorsHeader}> {
        const entry = this.#manifest.files[rank]!;
        const path = join(this.#dir, entry.name);
        let handle: FileHandle;
        try {
            handle = await open(path, "r");
        } catch (error) {
            throw new InputError([{code: ErrorCodes.fileRead, file: path, message: `cannot read the checkpoint's rank ${rank} file (${errnoOf(error)})`}]);
        }
        try {
            const header = await readSafetensorsHeader(handle, {path});
            if (header.fileSize !== entry.bytes) {
                throw fileError(path, `the file has ${header.fileSize} bytes, the manifest says ${entry.bytes} (truncated or replaced?)`);
            }
            const meta = header.metadata;
            if (meta?.["format"] !== checkpointFormat || meta["rank"] !== String(rank) || meta["world_size"] !== String(this.#manifest.worldSize)) {
                throw fileError(path, `its __metadata__ ${JSON.stringify(meta)} is not rank ${rank} of a ${this.#manifest.worldSize}-rank ${checkpointFormat}`);
            }
            return {handle, header};
        } catch (error) {
            await handle.close().catch(() => undefined);
            throw error;
        }
    }
}

async function readLatest(dir: string): Promise<string> {
    const path = join(dir, checkpointLatestName);
    let text: string;
    try {
        text = await readFile(path, "utf8");
    } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") {
            throw stateError(path, `no ${checkpointLatestName} file in ${JSON.stringify(dir)}: no checkpoint was completed there (or pass {tag})`);
        }
        throw new InputError([{code: ErrorCodes.fileRead, file: path, message: `cannot read the file (${errnoOf(error)})`}]);
    }
    const tag = text.trim();
    if (!kTagPattern.test(tag) || tag === checkpointLatestName) throw stateError(path, `does not hold a checkpoint tag (got ${JSON.stringify(text.slice(0, 80))})`);
    return tag;
}

/** dir/<tag>, or the aside directory of a save that crashed between its two renames. */
async function tagDirectory(dir: string, tag: string): Promise<string> {
    const path = join(dir, tag);
    if (await isDirectory(path)) return path;
    for (const entry of (await readdir(dir)).sort()) {
        if (kAsidePattern.exec(entry)?.[1] === tag && (await exists(join(dir, entry, checkpointManifestName)))) return join(dir, entry);
    }
    throw stateError(path, `no checkpoint with tag ${JSON.stringify(tag)} in ${JSON.stringify(dir)}`);
}

async function readText(path: string): Promise<string> {
    try {
        return await readFile(path, "utf8");
    } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") throw stateError(path, "missing: not a complete mixz checkpoint");
        throw new InputError([{code: ErrorCodes.fileRead, file: path, message: `cannot read the file (${errnoOf(error)})`}]);
    }
}

/** Checks the manifest's shape and values; throws MIXZ_ERR_CHECKPOINT_STATE naming the file and field. */
function parseManifest(path: string, text: string): CheckpointManifest {
    let json: unknown;
    try {
        json = JSON.parse(text);
    } catch (error) {
        throw stateError(path, `not valid JSON (${(error as Error).message})`);
    }
    const bad = (field: string, message: string): InputError =>
        new InputError([{code: ErrorCodes.checkpointState, file: path, path: field, message}]);
    if (!isObject(json)) throw stateError(path, "not a JSON object");
    if (json["format"] !== checkpointFormat) throw bad("format", `expected ${JSON.stringify(checkpointFormat)}, got ${JSON.stringify(json["format"])}`);
    if (json["version"] !== checkpointVersion) {
        throw bad("version", `this mixz reads version ${checkpointVersion}, the checkpoint is version ${JSON.stringify(json["version"])}`);
    }
    const count = (field: string, min: number): number => {
        const value = json[field];
        if (!Number.isSafeInteger(value) || (value as number) < min) throw bad(field, `must be an integer ≥ ${min}, got ${JSON.stringify(value)}`);
        return value as number;
    };
    const worldSize = count("worldSize", 1);
    count("gradientAccumulationSteps", 1);
    count("globalSteps", 0);
    count("microSteps", 0);
    count("optimizerSteps", 0);
    if (json["trainingForwards"] !== undefined) count("trainingForwards", 0);
    const dtype = json["dtype"];
    if (dtype !== "fp32" && dtype !== "fp16" && dtype !== "bf16") throw bad("dtype", `must be "fp32", "fp16" or "bf16", got ${JSON.stringify(dtype)}`);
    const tensors = json["tensors"];
    if (!isObject(tensors) || tensors["paramDType"] !== paramDTypeOf[dtype] || tensors["hasMaster"] !== (dtype !== "fp32")) {
        throw bad("tensors", `must be {"paramDType": "${paramDTypeOf[dtype]}", "hasMaster": ${dtype !== "fp32"}} for dtype ${dtype}, got ${JSON.stringify(tensors)}`);
    }
    const model = json["model"];
    if (!isObject(model) || model["kind"] !== "llama" || !isObject(model["config"])) throw bad("model", `must be {"kind": "llama", "config": {…}}, got ${JSON.stringify(model)}`);
    const parameters = json["parameters"];
    if (
        !Array.isArray(parameters) ||
        !parameters.every(
            (p) =>
                isObject(p) &&
                typeof p["name"] === "string" &&
                Array.isArray(p["shape"]) &&
                p["shape"].every((d) => Number.isSafeInteger(d) && (d as number) >= 0) &&
                Number.isSafeInteger(p["numel"]) &&
                (p["numel"] as number) >= 1
        )
    ) {
        throw bad("parameters", "must be a list of {name, shape, numel ≥ 1}");
    }
    const files = json["files"];
    if (
        !Array.isArray(files) ||
        files.length !== worldSize ||
        !files.every((f, r) => isObject(f) && f["rank"] === r && f["name"] === rankFileName(r) && Number.isSafeInteger(f["bytes"]) && (f["bytes"] as number) >= 0)
    ) {
        throw bad("files", `must list rank_0.safetensors … rank_${worldSize - 1}.safetensors with their sizes, one per rank of the ${worldSize}-rank world`);
    }
    return json as unknown as CheckpointManifest;
}

/** The checkpoint must describe this engine's model: same model config, same parameters. */
function checkCompatible(engine: CheckpointAccess, manifest: CheckpointManifest, path: string): void {
    const problems: Problem[] = [];
    const saved = manifest.model.config as unknown as Record<string, unknown>;
    const mine = engine.model.config as unknown as Record<string, unknown>;
    // The seed and the init's spread only shape the initial weights, which the checkpoint replaces.
    for (const key of ["vocabSize", "hidden", "layers", "heads", "kvHeads", "intermediate", "maxSeqLen", "ropeTheta", "rmsEps"]) {
        if (saved[key] !== mine[key]) {
            problems.push({
                code: ErrorCodes.checkpointState,
                file: path,
                path: `model.config.${key}`,
                message: `the checkpoint's model has ${key} ${JSON.stringify(saved[key])}, this engine's model has ${JSON.stringify(mine[key])}`
            });
        }
    }
    const params = engine.parameters;
    if (manifest.parameters.length !== params.length) {
        problems.push({code: ErrorCodes.checkpointState, file: path, path: "parameters", message: `the checkpoint has ${manifest.parameters.length} parameters, this engine's model has ${params.length}`});
    } else {
        for (const [i, p] of params.entries()) {
            const q = manifest.parameters[i]!;
            if (q.name !== p.name || q.numel !== p.numel || q.shape.length !== p.shape.length || q.shape.some((d, k) => d !== p.shape[k])) {
                problems.push({
                    code: ErrorCodes.checkpointState,
                    file: path,
                    path: `parameters[${i}]`,
                    message: `the checkpoint has ${q.name} [${q.shape.join(",")}], this engine's model has ${p.name} [${p.shape.join(",")}]`
                });
                if (problems.length >= 12) break;
            }
        }
    }
    if (problems.length > 0) throw new InputError(problems);
}

async function isDirectory(path: string): Promise<boolean> {
    try {
        return (await stat(path)).isDirectory();
    } catch {
        return false;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function checkDirArgument(fn: string, dir: unknown): asserts dir is string {
    if (typeof dir !== "string" || dir === "") throw invalidOption(fn, `dir must be a non-empty path string, got ${JSON.stringify(dir) ?? typeof dir}`);
}

function checkOptionsObject(fn: string, options: unknown): void {
    if (typeof options !== "object" || options === null) throw invalidOption(fn, `options must be an object, got ${options === null ? "null" : typeof options}`);
}

function checkTag(fn: string, tag: unknown): asserts tag is string {
    if (typeof tag !== "string" || !kTagPattern.test(tag) || tag === checkpointLatestName) {
        throw invalidOption(
            fn,
            `tag must be 1–200 characters of letters, digits and _ . + = - not starting with "." (nor "${checkpointLatestName}"), got ${JSON.stringify(tag) ?? typeof tag}`
        );
    }
}

function invalidOption(fn: string, message: string): InputError {
    return new InputError([{code: ErrorCodes.checkpointState, path: fn, message}]);
}

function stateError(path: string, message: string): InputError {
    return new InputError([{code: ErrorCodes.checkpointState, file: path, message}]);
}

function fileError(path: string, message: string): InputError {
    return new InputError([{code: ErrorCodes.safetensors, file: path, message}]);
}

function isObject(value: unknown): value is Record<string, unknown> {
    return typeof value === "object" && value !== null && !Array.isArray(value);
}

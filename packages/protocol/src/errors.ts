/**
 * The error model shared by every mixz package.
 *
 * Every error carries a stable `code` (tests and tools match on it, never on the prose), a
 * `category` saying whose fault it is (the taxonomy of torch.distributed.elastic), and the context
 * that locates it (file, line, JSON path, host, rank).
 */

/** Whose fault an error is: decides the exit code and how the launcher reports it. */
export type ErrorCategory =
    /** A mistake in what the user gave us (flags, config, hostfile): exit 2, nothing started. */
    | "user"
    /** A rank's own failure (its script threw, it was killed). */
    | "worker"
    /** A defect or broken installation of mixz itself. */
    | "platform"
    /** Hosts, network, SSH: the job could not start or was lost. */
    | "infra";

/** Where a problem sits in the user's input. Every field is optional; present ones are printed. */
export interface ProblemLocation {
    /** The file the problem is in, as the user named it. */
    readonly file?: string;
    /** 1-based line. */
    readonly line?: number;
    /** 1-based column. */
    readonly column?: number;
    /** JSON path in dotted form (`zero_optimization.stage`), or a flag name (`--num_gpus`). */
    readonly path?: string;
}

/** One thing wrong with the user's input. */
export interface Problem extends ProblemLocation {
    readonly code: string;
    readonly message: string;
}

export interface MixzErrorOptions {
    readonly category?: ErrorCategory;
    readonly context?: Readonly<Record<string, unknown>>;
    readonly cause?: unknown;
}

/** Base class of every error mixz raises on purpose. */
export class MixzError extends Error {
    readonly code: string;
    readonly category: ErrorCategory;
    readonly context: Readonly<Record<string, unknown>>;

    constructor(code: string, message: string, options: MixzErrorOptions = {}) {
        super(message, options.cause === undefined ? undefined : {cause: options.cause});
        this.name = "MixzError";
        this.code = code;
        this.category = options.category ?? "platform";
        this.context = options.context ?? {};
    }
}

/**
 * The user's input is wrong in one or more places. Collecting problems instead of stopping at the
 * first lets `mixz config check` list everything that needs fixing in one run.
 */
export class InputError extends MixzError {
    readonly problems: readonly Problem[];

    constructor(problems: readonly Problem[]) {
        if (problems.length === 0) throw new RangeError("InputError needs at least one problem");
        const first = problems[0]!;
        super(first.code, problems.map(formatProblem).join("\n"), {category: "user"});
        this.name = "InputError";
        this.problems = problems;
    }
}

/** One line for a problem: `file:line:col: path: message`, leaving out what is unknown. */
export function formatProblem(problem: Problem): string {
    let where = "";
    if (problem.file !== undefined) {
        where = problem.file;
        if (problem.line !== undefined) {
            where += `:${problem.line}`;
            if (problem.column !== undefined) where += `:${problem.column}`;
        }
        where += ": ";
    }
    const path = problem.path !== undefined && problem.path !== "" ? `${problem.path}: ` : "";
    return `${where}${path}${problem.message}`;
}

/** Stable error codes. Add, never rename: tools match on these strings. */
export const ErrorCodes = {
    /** Command-line flags are wrong or conflict. */
    usage: "MIXZ_ERR_USAGE",
    /** A file could not be read. */
    fileRead: "MIXZ_ERR_FILE_READ",
    /** A config file is not valid JSON. */
    configSyntax: "MIXZ_ERR_CONFIG_SYNTAX",
    /** A key appears twice in one JSON object. */
    configDuplicateKey: "MIXZ_ERR_CONFIG_DUPLICATE_KEY",
    /** A key that is not part of the DeepSpeed config mixz understands. */
    configUnknownKey: "MIXZ_ERR_CONFIG_UNKNOWN_KEY",
    /** A value has the wrong type or is out of range (JSON Schema pass). */
    configInvalidValue: "MIXZ_ERR_CONFIG_INVALID_VALUE",
    /** Cross-field rules: batch arithmetic, fp16 and bf16, hpZ size. */
    configConflict: "MIXZ_ERR_CONFIG_CONFLICT",
    /** A Hugging Face "auto" value that mixz cannot derive. */
    configUnresolvedAuto: "MIXZ_ERR_CONFIG_UNRESOLVED_AUTO",
    /** A hostfile line is malformed, or a host is repeated. */
    hostfileSyntax: "MIXZ_ERR_HOSTFILE_SYNTAX",
    /** The hostfile names no usable host. */
    hostfileEmpty: "MIXZ_ERR_HOSTFILE_EMPTY",
    /** An --include/--exclude spec is malformed or names a host or slot that does not exist. */
    filter: "MIXZ_ERR_FILTER",
    /** The resource selection leaves no rank to run. */
    emptyWorld: "MIXZ_ERR_EMPTY_WORLD",
    /** The native addon is missing or cannot be loaded. */
    nativeMissing: "MIXZ_ERR_NATIVE_MISSING",
    nativeLoad: "MIXZ_ERR_NATIVE_LOAD",
    /** A frame that is not a valid message, a wrong token or protocol version, a duplicate rank. */
    protocol: "MIXZ_ERR_PROTOCOL",
    /** Ranks did not all join in time. */
    rendezvousTimeout: "MIXZ_ERR_RDZV_TIMEOUT",
    /** A key-value wait or barrier timed out. */
    storeTimeout: "MIXZ_ERR_STORE_TIMEOUT",
    /** The coordinator connection was lost or refused. */
    coordinatorLost: "MIXZ_ERR_COORDINATOR_LOST",
    /** A rank missed its heartbeat deadline. */
    heartbeatLost: "MIXZ_ERR_HEARTBEAT_LOST",
    /** The job was aborted (another rank failed, Ctrl-C). */
    aborted: "MIXZ_ERR_ABORTED",
    /** The coordinator's address cannot be bound (in use, not local). */
    addressInUse: "MIXZ_ERR_ADDRESS_IN_USE",
    /** A host cannot be reached or used over SSH (DNS, refused, timeout, auth, host key). */
    ssh: "MIXZ_ERR_SSH",
    /** The daemon's mixz version differs from the launcher's. */
    versionMismatch: "MIXZ_ERR_VERSION_MISMATCH",
    /** A barrier can never complete because a rank has left the job. */
    rankDeparted: "MIXZ_ERR_RANK_DEPARTED",
    /** A rank process failed (non-zero exit, signal). */
    rankFailed: "MIXZ_ERR_RANK_FAILED",
    /** A capability that a later release of mixz delivers. */
    notYetAvailable: "MIXZ_ERR_NOT_YET_AVAILABLE",
    /** A safetensors file is malformed (header, offsets, sizes), or tensors handed to the writer are. */
    safetensors: "MIXZ_ERR_SAFETENSORS",
    /** A file could not be written (or atomically replaced). */
    fileWrite: "MIXZ_ERR_FILE_WRITE",
    /** fp16 training overflowed with the dynamic loss scale already at min_loss_scale (DeepSpeed raises too). */
    lossScaleAtMinimum: "MIXZ_ERR_LOSS_SCALE_MIN",
    /** Saved training state (loss scaler, learning-rate schedule) is malformed or does not fit the config. */
    checkpointState: "MIXZ_ERR_CHECKPOINT_STATE",
    /** A model configuration the engine cannot build (sizes, head counts, dtype). */
    modelConfig: "MIXZ_ERR_MODEL_CONFIG",
    /** A batch handed to the engine has the wrong shape, type or values (token ids, labels). */
    batch: "MIXZ_ERR_BATCH",
    /** An engine call out of order (backward without forward, a call after dispose). */
    engineState: "MIXZ_ERR_ENGINE_STATE",
    /** A token data file cannot be used: too short, size not a multiple of the token dtype, an id out of range. */
    data: "MIXZ_ERR_DATA",
    /** A PEFT adapter that does not fit the engine's LoRA settings or model, or is malformed. */
    peftAdapter: "MIXZ_ERR_PEFT_ADAPTER",
    /** A model directory's tokenizer files are missing, unreadable or malformed, or it has no chat template. */
    tokenizer: "MIXZ_ERR_TOKENIZER"
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

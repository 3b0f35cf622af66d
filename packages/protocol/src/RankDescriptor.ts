import {ErrorCodes, MixzError} from "./errors.js";

/**
 * Everything a rank daemon needs, sent by the launcher as ONE JSON line on the daemon's stdin
 * (never on the command line: it holds the job's secret token, and `ps` shows command lines to
 * every user of a host). After that line the launcher keeps stdin open and writes nothing more:
 * its end-of-file is the daemon's lifeline (the launcher or the SSH channel is gone).
 */
export interface RankDescriptor {
    readonly protocol: number;
    readonly mixzVersion: string;
    readonly jobId: string;
    readonly token: string;
    /** ws://host:port/ of the coordinator. */
    readonly coordinatorUrl: string;
    readonly rank: number;
    readonly localRank: number;
    readonly worldSize: number;
    readonly localWorldSize: number;
    /** Node index in plan order, and the number of nodes. */
    readonly crossRank: number;
    readonly crossSize: number;
    /** The plan's name of this rank's host. */
    readonly host: string;
    /** Slot id of this rank on its host (its GPU id on GPU hosts). */
    readonly slot: number;
    /** Every slot id of this node, in order: CUDA_VISIBLE_DEVICES on GPU hosts. */
    readonly nodeSlots: readonly number[];
    readonly masterAddr: string;
    readonly masterPort: number;
    /** Absolute path of the script, and its arguments. */
    readonly script: string;
    readonly args: readonly string[];
    /** Working directory of the launcher, where the rank runs. */
    readonly cwd: string;
    /** Variables to set before the script starts (env files, forwarded prefixes). */
    readonly env: Readonly<Record<string, string>>;
    /** The validated DeepSpeed config (every default filled in), or null without --config. */
    readonly config: unknown;
    readonly joinTimeoutMs: number;
    readonly heartbeatIntervalMs: number;
    readonly heartbeatMisses: number;
    readonly logFormat: "pretty" | "json";
}

/** Parses and checks the descriptor line; a broken one is a defect of mixz, not a user mistake. */
export function parseRankDescriptor(line: string): RankDescriptor {
    let value: unknown;
    try {
        value = JSON.parse(line);
    } catch (error) {
        throw new MixzError(ErrorCodes.protocol, `rank descriptor is not JSON: ${(error as Error).message}`, {category: "platform"});
    }
    const problems: string[] = [];
    const object = (typeof value === "object" && value !== null && !Array.isArray(value) ? value : {}) as Record<string, unknown>;
    const need = (key: keyof RankDescriptor, check: (v: unknown) => boolean, what: string): void => {
        if (!check(object[key])) problems.push(`${key} must be ${what}`);
    };
    const count = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 0;
    const positive = (v: unknown): boolean => Number.isInteger(v) && (v as number) > 0;
    const text = (v: unknown): boolean => typeof v === "string" && v !== "";
    for (const key of ["mixzVersion", "jobId", "token", "coordinatorUrl", "host", "masterAddr", "script", "cwd"] as const) {
        need(key, text, "a non-empty string");
    }
    for (const key of ["protocol", "worldSize", "localWorldSize", "crossSize", "joinTimeoutMs", "heartbeatIntervalMs", "heartbeatMisses"] as const) {
        need(key, positive, "a whole number > 0");
    }
    for (const key of ["rank", "localRank", "crossRank", "slot", "masterPort"] as const) need(key, count, "a whole number ≥ 0");
    need("args", (v) => Array.isArray(v) && v.every((a) => typeof a === "string"), "an array of strings");
    need("nodeSlots", (v) => Array.isArray(v) && v.every(count), "an array of slot ids");
    need("env", (v) => typeof v === "object" && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === "string"), "an object of strings");
    need("logFormat", (v) => v === "pretty" || v === "json", "pretty or json");
    if (!("config" in object)) problems.push("config must be present (null without --config)");
    if (problems.length === 0 && ((object["rank"] as number) >= (object["worldSize"] as number) || (object["localRank"] as number) >= (object["localWorldSize"] as number))) {
        problems.push("rank and localRank must be below worldSize and localWorldSize");
    }
    if (problems.length > 0) {
        throw new MixzError(ErrorCodes.protocol, `bad rank descriptor: ${problems.join("; ")}`, {category: "platform"});
    }
    return object as unknown as RankDescriptor;
}

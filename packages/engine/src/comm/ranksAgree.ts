/**
 * "Ranks agree on the outcome": the protocol checkpoints, pretrained loads and exports and PEFT
 * adapters share. A step that can fail on some ranks (reading or writing files) must end the same
 * way on every rank, or the ranks' next collectives go out of step. So each step is followed by
 * one small collective carrying a success flag: every rank then knows who failed, throws (its own
 * error, or one naming the failed peers) or goes on — together.
 *
 * - everyRankTries: every rank runs the step; an all-gather of flags.
 * - rootTries: only rank 0 runs it (prepare a directory, publish); a broadcast of the flag and of
 *   up to a few words rank 0 wants everyone to know (a nonce).
 */
import {ErrorCodes, MixzError} from "@mixz/protocol";
import type {ErrorCode} from "@mixz/protocol";

/** The two collectives the protocol needs, on a world whose other calls are idle. */
export interface AgreementChannel {
    readonly rank: number;
    readonly worldSize: number;
    /** Every rank's `buffer` receives rank 0's. */
    broadcast(buffer: Uint32Array, tag: number): Promise<void>;
    /** `output` (world × input.length) receives every rank's `input` in rank order. */
    allGather(input: Uint32Array, output: Uint32Array, tag: number): Promise<void>;
}

/** How a failed step is reported: names the call, its target and what the failure means. */
export interface AgreementFailure {
    /** The user-facing call ("saveCheckpoint", "lora.loadPeftAdapter"). */
    readonly fn: string;
    /** The file or directory the call works on. */
    readonly target: string;
    /** What the failure leaves behind ("nothing was loaded on any rank"). */
    readonly consequence: string;
    /** The code of the error naming failed peers; default MIXZ_ERR_ENGINE_STATE. */
    readonly code?: ErrorCode;
    /** Turns this rank's own failure into the error it throws (default: as it is). */
    readonly ownError?: (error: unknown) => unknown;
    /** Runs on every rank when any rank failed, before throwing (rank 0 removes a staging dir). */
    readonly cleanup?: () => Promise<void>;
}

/** The error a rank throws when another rank failed: it names who, the call and the consequence. */
export function peerFailure(failure: Pick<AgreementFailure, "fn" | "target" | "consequence" | "code">, ranks: readonly number[]): MixzError {
    const who = ranks.length === 0 ? "a rank" : ranks.length === 1 ? `rank ${ranks[0]}` : `ranks ${ranks.join(", ")}`;
    const whose = ranks.length === 1 ? "its" : "their";
    return new MixzError(failure.code ?? ErrorCodes.engineState, `${failure.fn}(${JSON.stringify(failure.target)}): ${who} failed (see ${whose} error); ${failure.consequence}`, {
        category: "user",
        context: {target: failure.target, ranks}
    });
}

/** Runs `attempt` on every rank; returns its value on every rank only when every rank succeeded. */
export async function everyRankTries<T>(channel: AgreementChannel, tag: number, failure: AgreementFailure, attempt: () => Promise<T>): Promise<T> {
    let own: {error: unknown} | undefined;
    let value: T | undefined;
    try {
        value = await attempt();
    } catch (error) {
        own = {error};
    }
    const flags = new Uint32Array(channel.worldSize);
    await channel.allGather(Uint32Array.of(own === undefined ? 1 : 0), flags, tag);
    const failed = [...flags].flatMap((ok, r) => (ok === 1 ? [] : [r]));
    if (failed.length === 0) return value as T;
    await failure.cleanup?.().catch(() => undefined);
    throw own === undefined ? peerFailure(failure, failed) : (failure.ownError ?? ((e: unknown) => e))(own.error);
}

/**
 * Runs `attempt` on rank 0 only; it may return up to `words` 32-bit words that every rank then
 * receives (zeros on a failure). Returns those words on every rank when rank 0 succeeded.
 */
export async function rootTries(channel: AgreementChannel, tag: number, failure: AgreementFailure, attempt: () => Promise<Uint32Array | void>, words = 0): Promise<Uint32Array> {
    const message = new Uint32Array(1 + words);
    let own: {error: unknown} | undefined;
    if (channel.rank === 0) {
        try {
            const payload = await attempt();
            if (payload !== undefined) {
                if (payload.length > words) throw new RangeError(`rootTries: ${payload.length} words returned, ${words} announced`);
                message.set(payload, 1);
            }
            message[0] = 1;
        } catch (error) {
            own = {error};
            message.fill(0);
        }
    }
    await channel.broadcast(message, tag);
    if (message[0] === 1) return message.subarray(1);
    await failure.cleanup?.().catch(() => undefined);
    throw own === undefined ? peerFailure(failure, [0]) : (failure.ownError ?? ((e: unknown) => e))(own.error);
}

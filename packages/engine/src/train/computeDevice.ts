/**
 * Where a rank computes: the one owner of the device decision. The config key `mixz.device`
 * ("cpu" | "cuda" | "auto", default "auto") says what the user asked for; the environment
 * variable MIXZ_DEVICE overrides it for one run without editing the config (as
 * CUDA_VISIBLE_DEVICES does for the devices). A CUDA rank uses GPU LOCAL_RANK of the devices
 * visible to it: the launcher sets CUDA_VISIBLE_DEVICES to the node's slots, and LOCAL_RANK
 * indexes them (reference/launchers.md), as under torchrun and DeepSpeed.
 *
 * "auto" means cpu until the CUDA backend's device checks (scripts/device-check) have passed on
 * real hardware: a backend that has never run on a GPU must not be picked silently. "cuda" is
 * experimental until then and is only used when asked for by name.
 */
import {ErrorCodes, InputError} from "@mixz/protocol";

/**
 * "cpu-staged" is for mixz's own tests, through MIXZ_DEVICE only: the CPU backend behind the
 * device contract (its memory claims to be device memory), so a machine without a GPU runs every
 * staging path the CUDA backend takes — `MIXZ_DEVICE=cpu-staged node scripts/run-tests.mjs`.
 */
export type ComputeDevice = "cpu" | "cuda" | "cpu-staged";
export type RequestedDevice = ComputeDevice | "auto";

export const deviceEnvVar = "MIXZ_DEVICE";

/**
 * Whether "auto" may resolve to cuda. False: the CUDA backend has not yet passed its device
 * checks on a GPU (docs/BENCHMARKS.md, "GPU"). Flip it only with a passing device run.
 */
export const cudaVerifiedOnHardware = false;

export interface DeviceChoice {
    readonly device: ComputeDevice;
    /** The CUDA device among the visible ones (the rank's local rank); 0 on the CPU. */
    readonly ordinal: number;
    /** What decided: the config key, the environment variable, or the caller (ZeroEngineOptions.device). */
    readonly source: "mixz.device" | typeof deviceEnvVar | "ZeroEngineOptions.device";
    readonly requested: RequestedDevice | "cpu-staged";
}

const requestable: readonly (RequestedDevice | "cpu-staged")[] = ["cpu", "cuda", "auto", "cpu-staged"];

/**
 * The device for a rank. `configured` is the resolved config's mixz.device; `localRank` the rank's
 * index on its host (default: $LOCAL_RANK, else 0). A MIXZ_DEVICE value other than cpu, cuda or
 * auto is a user error naming the variable.
 */
export function chooseDevice(configured: RequestedDevice, localRank?: number, env: NodeJS.ProcessEnv = process.env): DeviceChoice {
    const fromEnv = env[deviceEnvVar];
    let requested: DeviceChoice["requested"] = configured;
    let source: "mixz.device" | typeof deviceEnvVar = "mixz.device";
    if (fromEnv !== undefined && fromEnv !== "") {
        const value = fromEnv.trim().toLowerCase();
        if (!(requestable as readonly string[]).includes(value)) {
            throw new InputError([
                {code: ErrorCodes.configInvalidValue, path: deviceEnvVar, message: `expected cpu, cuda or auto, got ${JSON.stringify(fromEnv)}; unset it or set one of those`}
            ]);
        }
        requested = value as DeviceChoice["requested"];
        source = deviceEnvVar;
    }
    const device: ComputeDevice =
        requested === "cpu-staged" ? "cpu-staged" : requested === "cuda" || (requested === "auto" && cudaVerifiedOnHardware) ? "cuda" : "cpu";
    return {device, ordinal: device === "cuda" ? rankOrdinal(localRank, env) : 0, source, requested};
}

function rankOrdinal(localRank: number | undefined, env: NodeJS.ProcessEnv): number {
    if (localRank !== undefined) return localRank;
    const value = Number(env["LOCAL_RANK"]);
    return Number.isInteger(value) && value >= 0 ? value : 0;
}

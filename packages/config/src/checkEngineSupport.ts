/**
 * What mixz's ZeRO-3 engine can run, as config rules: stage 3, no offload device. (A config
 * without an optimizer section is an inference engine, as in DeepSpeed: ZeroEngine.hasOptimizer.) A DeepSpeed config may say otherwise and still be valid DeepSpeed, so these rules run
 * where the config is for the engine: `mixz config check` and `mixz launch` (context.engine), and
 * ZeroEngine.create (engineSupportProblems), with the same messages, so a launch is refused before
 * any rank starts instead of on every rank inside initialize().
 */
import {ErrorCodes, type Problem} from "@mixz/protocol";

import type {ResolvedConfig} from "./api.js";
import {formatJsonPath, type JsonPath} from "./jsonPath.js";

export interface EngineSupportViolation {
    readonly code: string;
    readonly path: JsonPath;
    readonly message: string;
}

/** The engine-support rules a resolved config breaks (none: the engine can run it). */
export function engineSupportViolations(config: ResolvedConfig): EngineSupportViolation[] {
    const out: EngineSupportViolation[] = [];
    const zero = config.zero_optimization;
    const invalid = (path: JsonPath, message: string): void => {
        out.push({code: ErrorCodes.configInvalidValue, path, message});
    };
    if (zero.stage !== 3) invalid(["zero_optimization", "stage"], `mixz's engine trains with ZeRO stage 3; got stage ${zero.stage} (set it to 3)`);
    for (const [section, what] of [
        ["offload_param", "parameters"],
        ["offload_optimizer", "optimizer states"]
    ] as const) {
        const offload = zero[section];
        if (offload !== null && offload.device !== "none") {
            invalid(["zero_optimization", section, "device"], `offloading is not supported by mixz's CPU engine (${what} already live in host memory); remove it or set "none"`);
        }
    }
    return out;
}

/** The same as Problems with dotted paths (ZeroEngine.create throws them as an InputError). */
export function engineSupportProblems(config: ResolvedConfig): Problem[] {
    return engineSupportViolations(config).map((v) => ({code: v.code, path: formatJsonPath(v.path), message: v.message}));
}

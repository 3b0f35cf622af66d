import type {NativeCudaProbe} from "./AddonCudaTypes.js";
import type {NativeBuildInfo} from "./AddonTypes.js";
import {loadBinding} from "./loadBinding.js";
import type {LoadBindingOptions} from "./loadBinding.js";

/** What the native addon is built from and whether its libraries work (loads it into this process). */
export function nativeInfo(options: LoadBindingOptions = {}): NativeBuildInfo {
    return loadBinding(options).version();
}

/** What this machine has for the CUDA backend and whether this build has it (loads the addon into this process). */
export function cudaInfo(options: LoadBindingOptions = {}): NativeCudaProbe {
    return loadBinding(options).cudaProbe();
}

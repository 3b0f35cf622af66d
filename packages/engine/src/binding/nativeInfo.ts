import type {NativeBuildInfo} from "./AddonTypes.js";
import {loadBinding} from "./loadBinding.js";
import type {LoadBindingOptions} from "./loadBinding.js";

/** What the native addon is built from and whether its libraries work (loads it into this process). */
export function nativeInfo(options: LoadBindingOptions = {}): NativeBuildInfo {
    return loadBinding(options).version();
}

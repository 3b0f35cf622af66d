import {existsSync} from "node:fs";
import {createRequire} from "node:module";

import {bindingExportTypes} from "./AddonTypes.js";
import type {BindingModule} from "./AddonTypes.js";
import {firstLine, nativeLoadError, nativeMissingError} from "./bindingErrors.js";
import {resolveBindingPath} from "./resolveBindingPath.js";
import type {BindingLocation} from "./resolveBindingPath.js";

export type LoadBindingOptions = BindingLocation;

// `.node` files can only be loaded through require (process.dlopen underneath), also from ESM.
const require = createRequire(import.meta.url);

// One module per absolute path. A shared object is loaded once per process anyway; caching the
// checked module saves repeating the export check and keeps a single object per binary.
const loaded = new Map<string, BindingModule>();

/**
 * Loads the native addon into this process and checks that it exports what BindingModule
 * promises. The path is `options.path`, else $MIXZ_NATIVE_BINARY, else native/build/Release, else
 * native/build/Debug (see resolveBindingPath).
 *
 * Throws MixzError MIXZ_ERR_NATIVE_MISSING when the file does not exist and
 * MIXZ_ERR_NATIVE_LOAD when it cannot be loaded or lacks an export. A binary that crashes while
 * loading takes this process with it; long-lived processes call probeBinding first.
 */
export function loadBinding(options: LoadBindingOptions = {}): BindingModule {
    const path = resolveBindingPath(options);
    const cached = loaded.get(path);
    if (cached !== undefined) return cached;

    if (!existsSync(path)) throw nativeMissingError(path);
    let module: unknown;
    try {
        module = require(path);
    } catch (error) {
        // dlopen failures (invalid ELF header, undefined symbol, missing libgloo.so.0) and Node's
        // own checks (module did not self-register, NODE_MODULE_VERSION mismatch) all land here.
        throw nativeLoadError(path, firstLine(error), {cause: error});
    }
    const missing = missingExports(module);
    if (missing.length > 0) {
        throw nativeLoadError(path, `it does not export ${missing.join(", ")}`, {context: {missing}});
    }
    const binding = module as BindingModule;
    loaded.set(path, binding);
    return binding;
}

/** Names of the exports in bindingExportTypes that `module` lacks or has with the wrong type. */
export function missingExports(module: unknown): string[] {
    const missing: string[] = [];
    for (const [name, type] of Object.entries(bindingExportTypes)) {
        const value: unknown =
            typeof module === "object" && module !== null ? (module as Record<string, unknown>)[name] : undefined;
        if (typeof value !== type) missing.push(`${name}()`);
    }
    return missing;
}

import {existsSync} from "node:fs";
import {resolve} from "node:path";
import {fileURLToPath} from "node:url";

/** Where to find the native addon. */
export interface BindingLocation {
    /** An explicit path to a `.node` file (relative paths are resolved against the working directory). */
    readonly path?: string;
}

/** The environment variable that points every mixz process at a specific addon binary. */
export const nativeBinaryEnvVar = "MIXZ_NATIVE_BINARY";

/**
 * The repository (or installation) root: this file lives in packages/engine/src when run from
 * source and in packages/engine/dist when built, three levels below the root either way.
 */
const repoRoot = fileURLToPath(new URL("../../../../", import.meta.url));

/** The two places scripts/build-native.mjs writes the addon to, in the order they are preferred. */
export const defaultBindingPaths: readonly string[] = [
    resolve(repoRoot, "native", "build", "Release", "mixz.node"),
    resolve(repoRoot, "native", "build", "Debug", "mixz.node")
];

/**
 * The absolute path of the addon to load: `location.path`, else $MIXZ_NATIVE_BINARY, else the
 * Release build, else the Debug build. When neither build exists the Release path is returned, so
 * the "not found" error names what `npm run build:native` would produce. Does not check that an
 * explicit path exists: the loader reports that with the path the user gave.
 */
export function resolveBindingPath(location: BindingLocation = {}, env: NodeJS.ProcessEnv = process.env): string {
    if (location.path !== undefined) return resolve(location.path);
    const fromEnv = env[nativeBinaryEnvVar];
    if (fromEnv !== undefined && fromEnv !== "") return resolve(fromEnv);
    const [release, debug] = defaultBindingPaths as [string, string];
    if (!existsSync(release) && existsSync(debug)) return debug;
    return release;
}

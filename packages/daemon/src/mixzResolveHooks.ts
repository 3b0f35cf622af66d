// Module resolution hooks (node:module register) of rank daemons: a training script's
// `import ... from "mixz"` resolves to the installation that runs it, wherever the script lives
// and whatever node_modules it has nearby, so launcher, daemon and script never mix versions.
// This file runs on Node's loader thread; it must not import anything of mixz.
import {readFileSync} from "node:fs";
import {dirname, join} from "node:path";
import {fileURLToPath} from "node:url";

interface HookData {
    readonly mixzEntry: string;
    /** file: URL of the user's script. */
    readonly scriptUrl: string;
}

interface ResolveContext {
    readonly conditions: readonly string[];
    readonly parentURL?: string;
}

interface ResolveResult {
    readonly url: string;
    readonly format?: string | null;
    readonly shortCircuit?: boolean;
}

type NextResolve = (specifier: string, context: ResolveContext) => Promise<ResolveResult>;

let mixzEntry = "";
let scriptUrl = "";

export async function initialize(data: HookData): Promise<void> {
    mixzEntry = data.mixzEntry;
    scriptUrl = data.scriptUrl;
}

export async function resolve(specifier: string, context: ResolveContext, nextResolve: NextResolve): Promise<ResolveResult> {
    if (specifier === "mixz" && mixzEntry !== "") return {url: mixzEntry, format: "module", shortCircuit: true};
    const result = await nextResolve(specifier, context);
    // A TypeScript training script is an ES module (top-level await is how the API is used) even
    // where no package.json says "type": "module" — e.g. a lone train.ts in a scratch directory,
    // which Node would otherwise load as CommonJS. JavaScript keeps Node's rules (a .js file
    // without "type" is CommonJS), and so does a package that declares "type": "commonjs".
    if (result.url === scriptUrl && /\.tsx?$/.test(result.url) && result.format !== "module" && !declaresCommonJs(result.url)) {
        return {...result, format: "module"};
    }
    return result;
}

/** Whether the nearest package.json above the file says "type": "commonjs" explicitly. */
function declaresCommonJs(url: string): boolean {
    let dir = dirname(fileURLToPath(url));
    for (;;) {
        try {
            const type = (JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as {type?: unknown}).type;
            return type === "commonjs";
        } catch {
            const parent = dirname(dir);
            if (parent === dir) return false;
            dir = parent;
        }
    }
}

// Module resolution hooks (node:module register) of rank daemons: a training script's
// `import ... from "mixz"` resolves to the installation that runs it, wherever the script lives
// and whatever node_modules it has nearby, so launcher, daemon and script never mix versions.
// This file runs on Node's loader thread; it must not import anything of mixz.

interface HookData {
    readonly mixzEntry: string;
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

export async function initialize(data: HookData): Promise<void> {
    mixzEntry = data.mixzEntry;
}

export async function resolve(specifier: string, context: ResolveContext, nextResolve: NextResolve): Promise<ResolveResult> {
    if (specifier === "mixz" && mixzEntry !== "") return {url: mixzEntry, format: "module", shortCircuit: true};
    return nextResolve(specifier, context);
}

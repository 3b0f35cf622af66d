import {suggestName} from "@mixz/config";
import {ErrorCodes, InputError, type Problem} from "@mixz/protocol";

/**
 * One parsed `--include`/`--exclude` value: host name → the slots named for it, or `"all"` for a
 * bare host name. Several specs for one host are merged (DeepSpeed does the same).
 */
export type ResourceFilter = ReadonlyMap<string, "all" | readonly number[]>;

/**
 * Parses DeepSpeed's filter syntax `NAME[:SLOT[,SLOT…]][@NAME[:SLOT[,SLOT…]]…]`, e.g.
 * `worker-0@worker-1:0,2`. Only the syntax is checked here; whether the hosts and slots exist is
 * checked against the hostfile by `applyResourceFilter`.
 */
export function parseResourceFilter(spec: string, flag: "--include" | "--exclude"): ResourceFilter {
    const problems: Problem[] = [];
    const problem = (message: string): void => {
        problems.push({code: ErrorCodes.filter, path: flag, message});
    };
    const result = new Map<string, "all" | number[]>();
    if (spec.trim() === "") problem("is empty: expected NAME[:SLOT[,SLOT…]][@NAME…]");

    for (const nodeSpec of spec.trim() === "" ? [] : spec.split("@")) {
        if (nodeSpec.trim() === "") {
            problem(`'${spec}' has an empty host between '@' separators`);
            continue;
        }
        const parts = nodeSpec.split(":");
        const name = parts[0]!.trim();
        if (name === "") {
            problem(`'${nodeSpec}' has no host name before ':'`);
            continue;
        }
        if (parts.length > 2) {
            problem(`'${nodeSpec}' has more than one ':'; write NAME:SLOT,SLOT`);
            continue;
        }
        if (parts.length === 1) {
            result.set(name, "all");
            continue;
        }
        const slotText = parts[1]!;
        if (slotText.trim() === "") {
            problem(`'${nodeSpec}' has no slots after ':'; give NAME alone for all its slots`);
            continue;
        }
        const slots: number[] = [];
        for (const item of slotText.split(",")) {
            const trimmed = item.trim();
            if (!/^\d+$/.test(trimmed)) {
                problem(`slot '${item}' of host '${name}' is not a whole number ≥ 0`);
                continue;
            }
            slots.push(Number(trimmed));
        }
        const previous = result.get(name);
        if (previous === "all") continue;
        result.set(name, [...new Set([...(previous ?? []), ...slots])].sort((a, b) => a - b));
    }
    if (problems.length > 0) throw new InputError(problems);
    return result;
}

/** A host and the slots it contributes, in hostfile order. */
export interface SelectedHost {
    readonly name: string;
    readonly slots: readonly number[];
}

/**
 * Applies an include or exclude filter to the pool (every host with its slot ids), following
 * DeepSpeed's intended semantics: a bare name means all of the host's slots; every named host and
 * slot must exist; excluding a whole host drops it; hosts left with no slot are dropped; the result
 * keeps pool order and sorted slots.
 */
export function applyResourceFilter(
    pool: readonly SelectedHost[],
    filter: ResourceFilter,
    mode: "include" | "exclude",
    source: string
): SelectedHost[] {
    const flag = mode === "include" ? "--include" : "--exclude";
    const problems: Problem[] = [];
    const byName = new Map(pool.map((host) => [host.name, host]));
    for (const [name, slots] of filter) {
        const host = byName.get(name);
        if (host === undefined) {
            const near = suggestName(name, byName.keys());
            problems.push({
                code: ErrorCodes.filter,
                path: flag,
                message: `Hostname '${name}' not found in ${source}${near === undefined ? "" : `; did you mean '${near}'?`}`
            });
            continue;
        }
        if (slots === "all") {
            if (mode === "include" && host.slots.length === 0) {
                problems.push({code: ErrorCodes.filter, path: flag, message: `host '${name}' has slots=0 and takes no part`});
            }
            continue;
        }
        for (const slot of slots) {
            if (!host.slots.includes(slot)) {
                problems.push({
                    code: ErrorCodes.filter,
                    path: flag,
                    message: `No slot '${slot}' specified on host '${name}' (${describeSlots(host.slots)})`
                });
            }
        }
    }
    if (problems.length > 0) throw new InputError(problems);

    const selected: SelectedHost[] = [];
    for (const host of pool) {
        const named = filter.get(host.name);
        let slots: readonly number[];
        if (mode === "include") {
            if (named === undefined) continue;
            slots = named === "all" ? host.slots : named;
        } else {
            if (named === "all") continue;
            slots = named === undefined ? host.slots : host.slots.filter((slot) => !named.includes(slot));
        }
        if (slots.length > 0) selected.push({name: host.name, slots});
    }
    return selected;
}

function describeSlots(slots: readonly number[]): string {
    if (slots.length === 0) return "it has slots=0";
    return `its slots are ${formatIdList(slots)}`;
}

/** `[0,1,2,3,5]` → `0-3,5`: compact and unambiguous for slot and rank lists. */
export function formatIdList(ids: readonly number[]): string {
    const parts: string[] = [];
    let i = 0;
    while (i < ids.length) {
        let j = i;
        while (j + 1 < ids.length && ids[j + 1] === ids[j]! + 1) j++;
        parts.push(j > i + 1 ? `${ids[i]}-${ids[j]}` : j === i + 1 ? `${ids[i]},${ids[j]}` : `${ids[i]}`);
        i = j + 1;
    }
    return parts.join(",");
}

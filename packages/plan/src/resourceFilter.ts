import {suggestName} from "@mixz/config";
import {formatIdList} from "./formatIdList.js";
import {ErrorCodes, InputError, type Problem} from "@mixz/protocol";

/** What a filter names of one host: the whole host (a bare name) and/or particular slots. */
export interface HostSelection {
    /** A bare name was given: all of the host's slots. */
    readonly all: boolean;
    /** Slots named explicitly, sorted and de-duplicated; they must exist even when `all` is set. */
    readonly slots: readonly number[];
}

/**
 * One parsed `--include`/`--exclude` value: host name → what is named of it. Several specs for
 * one host are merged (DeepSpeed does the same), keeping every named slot so that each is checked.
 */
export type ResourceFilter = ReadonlyMap<string, HostSelection>;

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
    const result = new Map<string, HostSelection>();
    const merge = (name: string, all: boolean, slots: readonly number[]): void => {
        const previous = result.get(name);
        result.set(name, {
            all: all || previous?.all === true,
            slots: [...new Set([...(previous?.slots ?? []), ...slots])].sort((a, b) => a - b)
        });
    };
    if (spec.trim() === "") problem("is empty: expected NAME[:SLOT[,SLOT…]][@NAME…]");
    else if (spec.split("@").some((nodeSpec) => nodeSpec.trim() === "")) {
        problem(`'${spec}' has an empty host name before or after an '@' separator`);
    }

    for (const nodeSpec of spec.trim() === "" ? [] : spec.split("@")) {
        if (nodeSpec.trim() === "") continue;
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
            merge(name, true, []);
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
            if (!/^\d+$/.test(trimmed) || !Number.isSafeInteger(Number(trimmed))) {
                problem(`slot '${item}' of host '${name}' is not a whole number ≥ 0`);
                continue;
            }
            slots.push(Number(trimmed));
        }
        merge(name, false, slots);
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
    for (const [name, selection] of filter) {
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
        if (selection.all && mode === "include" && host.slots.length === 0) {
            problems.push({code: ErrorCodes.filter, path: flag, message: `host '${name}' has slots=0 and takes no part`});
        }
        for (const slot of selection.slots) {
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
            slots = named.all ? host.slots : named.slots;
        } else {
            if (named?.all === true) continue;
            slots = named === undefined ? host.slots : host.slots.filter((slot) => !named.slots.includes(slot));
        }
        if (slots.length > 0) selected.push({name: host.name, slots});
    }
    return selected;
}

function describeSlots(slots: readonly number[]): string {
    if (slots.length === 0) return "it has slots=0";
    return `its slots are ${formatIdList(slots)}`;
}

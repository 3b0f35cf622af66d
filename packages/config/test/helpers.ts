import assert from "node:assert/strict";
import {InputError, type Problem} from "@mixz/protocol";

/** Runs `fn`, which must throw an InputError, and returns its problems. */
export function problemsOf(fn: () => unknown): readonly Problem[] {
    try {
        fn();
    } catch (error) {
        if (error instanceof InputError) return error.problems;
        throw error;
    }
    assert.fail("expected an InputError");
}

/** The single problem `fn` throws. */
export function problemOf(fn: () => unknown): Problem {
    const problems = problemsOf(fn);
    assert.equal(problems.length, 1, `expected one problem, got:\n${problems.map((p) => JSON.stringify(p)).join("\n")}`);
    return problems[0]!;
}

/** The problem at `path`, which must exist. */
export function problemAt(problems: readonly Problem[], path: string): Problem {
    const found = problems.find((problem) => problem.path === path);
    assert.ok(found, `no problem at ${path}; got:\n${problems.map((p) => JSON.stringify(p)).join("\n")}`);
    return found;
}

/** A config text with the minimum the resolver needs, plus `extra` members (JSON text without braces). */
export function configText(extra = ""): string {
    return `{"train_micro_batch_size_per_gpu": 1${extra === "" ? "" : `, ${extra}`}}`;
}

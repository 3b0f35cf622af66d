/**
 * Collects the problems, warnings and unchecked rules of one config resolution, placing each
 * problem at its file, line and column.
 *
 * Rules speak of canonical paths (`bf16.enabled`); where the user wrote an alias (`bfloat16`),
 * `rename` makes problems name and locate what the user wrote.
 */
import type {Problem} from "@mixz/protocol";
import {type JsonPath, formatJsonPath, jsonPathKey} from "./jsonPath.js";
import type {JsonSource} from "./JsonSource.js";

/** Which position a problem points at: the member's key, its value, or the object that should hold it. */
export type Anchor = "key" | "value" | "parent";

export class ProblemCollector {
    readonly errors: Problem[] = [];
    readonly warnings: Problem[] = [];
    readonly unchecked: string[] = [];
    private readonly file: string | undefined;
    private readonly source: JsonSource | undefined;
    private readonly renames: {readonly from: JsonPath; readonly to: JsonPath}[] = [];
    private readonly errorPaths = new Set<string>();

    constructor(file: string | undefined, source: JsonSource | undefined) {
        this.file = file;
        this.source = source;
    }

    /** From now on, problems at `canonical` (or below it) are reported at `written`. */
    rename(canonical: JsonPath, written: JsonPath): void {
        this.renames.push({from: canonical, to: written});
    }

    error(code: string, path: JsonPath, message: string, anchor: Anchor = "value"): void {
        const problem = this.make(code, path, message, anchor);
        this.errors.push(problem);
        this.errorPaths.add(jsonPathKey(this.written(path)));
    }

    warn(code: string, path: JsonPath, message: string, anchor: Anchor = "key"): void {
        this.warnings.push(this.make(code, path, message, anchor));
    }

    note(unchecked: string): void {
        if (!this.unchecked.includes(unchecked)) this.unchecked.push(unchecked);
    }

    /** Whether an error was already reported at `path` (rules skip values the schema pass rejected). */
    hasErrorAt(path: JsonPath): boolean {
        return this.errorPaths.has(jsonPathKey(this.written(path)));
    }

    /** The line:column of `path` as written, if known (for messages such as "first at line 3"). */
    lineOf(path: JsonPath, anchor: Anchor = "key"): number | undefined {
        return this.source?.locate(this.written(path), anchor)?.line;
    }

    /** `path` with renamed prefixes replaced by what the user wrote. */
    written(path: JsonPath): JsonPath {
        for (const {from, to} of this.renames) {
            if (from.length <= path.length && from.every((segment, i) => String(segment) === String(path[i]))) {
                return [...to, ...path.slice(from.length)];
            }
        }
        return path;
    }

    /** Errors in document order (line, then column); problems without a position keep their order, last. */
    sortedErrors(): Problem[] {
        return byPosition(this.errors);
    }

    /** Warnings in document order, as sortedErrors. */
    sortedWarnings(): Problem[] {
        return byPosition(this.warnings);
    }

    private make(code: string, path: JsonPath, message: string, anchor: Anchor): Problem {
        const written = this.written(path);
        const position = this.source?.locate(written, anchor);
        return {
            code,
            message,
            ...(this.file === undefined ? {} : {file: this.file}),
            ...(position === undefined ? {} : {line: position.line, column: position.column}),
            path: formatJsonPath(written)
        };
    }
}

function byPosition(problems: readonly Problem[]): Problem[] {
    return problems
        .map((problem, index) => ({problem, index}))
        .sort((a, b) => {
            const la = a.problem.line ?? Number.POSITIVE_INFINITY;
            const lb = b.problem.line ?? Number.POSITIVE_INFINITY;
            if (la !== lb) return la - lb;
            const ca = a.problem.column ?? Number.POSITIVE_INFINITY;
            const cb = b.problem.column ?? Number.POSITIVE_INFINITY;
            if (ca !== cb) return ca - cb;
            return a.index - b.index;
        })
        .map(({problem}) => problem);
}

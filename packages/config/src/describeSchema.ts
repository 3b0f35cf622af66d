/**
 * English for schemas and values, so that a type error reads "expected an integer ≥ 0 or "auto",
 * got "lots"" rather than Ajv's "must be integer" / "must be equal to constant" /
 * "must match a schema in anyOf".
 */
import {isPlainObject} from "./jsonPath.js";

/** What `schema` accepts, as a noun phrase ("an integer ≥ 1 or \"auto\""). */
export function describeExpected(schema: unknown): string {
    return joinAlternatives(alternatives(schema));
}

/** A value as a message shows it: strings quoted, containers by kind. */
export function describeValue(value: unknown): string {
    if (typeof value === "string") {
        const shown = value.length > 40 ? `${value.slice(0, 37)}...` : value;
        return JSON.stringify(shown);
    }
    if (typeof value === "number") return Number.isFinite(value) ? String(value) : `the non-JSON number ${String(value)}`;
    if (typeof value === "boolean" || value === null) return String(value);
    if (Array.isArray(value)) return value.length === 1 ? "an array of 1 element" : `an array of ${value.length} elements`;
    if (value === undefined) return "nothing";
    if (typeof value === "object") return "an object";
    return `a ${typeof value}`;
}

function alternatives(schema: unknown): string[] {
    if (!isPlainObject(schema)) return ["any value"];
    const branches = schema["anyOf"] ?? schema["oneOf"];
    if (Array.isArray(branches)) return branches.flatMap(alternatives);
    if ("const" in schema) return [JSON.stringify(schema["const"])];
    const allowed = schema["enum"];
    if (Array.isArray(allowed)) {
        if (allowed.length > 4) return [`one of ${joinAlternatives(allowed.map((v) => JSON.stringify(v)))}`];
        return allowed.map((v) => JSON.stringify(v));
    }
    const type = schema["type"];
    const types = Array.isArray(type) ? type.map(String) : typeof type === "string" ? [type] : [];
    if (types.length === 0) {
        const allOf = schema["allOf"];
        if (Array.isArray(allOf) && allOf.length === 1) return alternatives(allOf[0]);
        return ["any value"];
    }
    return types.flatMap((t) => describeType(t, schema));
}

function describeType(type: string, schema: Record<string, unknown>): string[] {
    switch (type) {
        case "integer":
            return [`an integer${range(schema)}`];
        case "number":
            return [`a number${range(schema)}`];
        case "boolean":
            return ["true", "false"];
        case "null":
            return ["null"];
        case "string":
            return ["a string"];
        case "object":
            return ["an object"];
        case "array": {
            const count = schema["minItems"] === schema["maxItems"] && typeof schema["minItems"] === "number" ? schema["minItems"] : undefined;
            const items = schema["items"];
            const of = isPlainObject(items) ? ` of ${plural(describeExpected(items))}` : "";
            return [count === undefined ? `an array${of}` : `an array${of.replace(/^ of /, ` of ${count} `)}`];
        }
        default:
            return [type];
    }
}

/** " ≥ 0", " between 0 and 1", " > 0 and < 1", or "". */
function range(schema: Record<string, unknown>): string {
    const min = schema["minimum"];
    const max = schema["maximum"];
    const xmin = schema["exclusiveMinimum"];
    const xmax = schema["exclusiveMaximum"];
    if (typeof min === "number" && typeof max === "number") return ` between ${min} and ${max}`;
    const parts: string[] = [];
    if (typeof min === "number") parts.push(`≥ ${min}`);
    if (typeof xmin === "number") parts.push(`> ${xmin}`);
    if (typeof max === "number") parts.push(`≤ ${max}`);
    if (typeof xmax === "number") parts.push(`< ${xmax}`);
    return parts.length === 0 ? "" : ` ${parts.join(" and ")}`;
}

/** "a number ≥ 0" → "numbers ≥ 0" (enough for the item schemas we have). */
function plural(phrase: string): string {
    return phrase.replace(/^an? (\w+)/, "$1s");
}

/** ["a", "b", "c"] → "a, b or c". */
function joinAlternatives(parts: readonly string[]): string {
    const unique = [...new Set(parts)];
    if (unique.length <= 1) return unique[0] ?? "nothing";
    return `${unique.slice(0, -1).join(", ")} or ${unique[unique.length - 1]!}`;
}

/**
 * JSON paths: where a value sits inside a JSON document, as segments (object keys are strings,
 * array indices numbers). Problems print them dotted (`zero_optimization.stage`,
 * `optimizer.params.betas[1]`); maps key them with `jsonPathKey`.
 */

export type JsonPathSegment = string | number;
export type JsonPath = readonly JsonPathSegment[];

const identifier = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** `zero_optimization.stage`, `optimizer.params.betas[1]`, `["odd key"]`; the root is "". */
export function formatJsonPath(path: JsonPath): string {
    let out = "";
    for (const segment of path) {
        if (typeof segment === "number") out += `[${segment}]`;
        else if (identifier.test(segment)) out += out === "" ? segment : `.${segment}`;
        else out += `[${JSON.stringify(segment)}]`;
    }
    return out;
}

/** A string that identifies a path in a Map (indices and keys compare as strings). */
export function jsonPathKey(path: JsonPath): string {
    return JSON.stringify(path.map(String));
}

/**
 * Converts a JSON Pointer (RFC 6901, as Ajv's `instancePath`) into segments, turning a segment
 * into a number where `root` holds an array at that point.
 */
export function jsonPointerToPath(pointer: string, root: unknown): JsonPathSegment[] {
    if (pointer === "") return [];
    const path: JsonPathSegment[] = [];
    let node: unknown = root;
    for (const raw of pointer.slice(1).split("/")) {
        const key = raw.replaceAll("~1", "/").replaceAll("~0", "~");
        if (Array.isArray(node)) {
            const index = Number(key);
            path.push(index);
            node = node[index];
        } else {
            path.push(key);
            node = isPlainObject(node) ? node[key] : undefined;
        }
    }
    return path;
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
    return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Whether `object` has `key` as an own property whose value is not undefined. */
export function hasKey(object: unknown, key: string): boolean {
    return isPlainObject(object) && Object.hasOwn(object, key) && object[key] !== undefined;
}

/** The value at `path`, or undefined where the path leaves the document. */
export function valueAt(root: unknown, path: JsonPath): unknown {
    let node = root;
    for (const segment of path) {
        if (Array.isArray(node) && typeof segment === "number") node = node[segment];
        else if (isPlainObject(node) && typeof segment === "string" && Object.hasOwn(node, segment)) node = node[segment];
        else return undefined;
    }
    return node;
}

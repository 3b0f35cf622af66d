/**
 * The JSON Schema pass: runs Ajv (which also fills in the schema's defaults, in place) and turns
 * its errors into one Problem per mistake.
 *
 * Ajv reports a mistake several times: a value outside `anyOf: [{integer ≥ 0}, {const "auto"}]`
 * yields one error per branch plus one for the anyOf. The translation:
 * 1. drops `if` errors (the `then` errors under them say what is wrong);
 * 2. for each anyOf/oneOf (innermost first): when the value is an object or array and exactly one
 *    branch is of that type, the mistake is inside that branch: keep its errors and drop the rest;
 *    otherwise keep only the anyOf error, which is described as a whole;
 * 3. reports every additionalProperties error as an unknown key (with a nearest-name suggestion
 *    over the keys allowed there, aliases included) and every required error as a missing key;
 * 4. groups what is left by value (instance path) and describes the outermost failing schema at
 *    that value once: "expected …, got …".
 */
import type {AnySchemaObject, ErrorObject} from "ajv";
import {ErrorCodes} from "@mixz/protocol";
import {configValidator, loadConfigSchema} from "./configSchema.js";
import {describeExpected, describeValue} from "./describeSchema.js";
import {type JsonPath, isPlainObject, jsonPointerToPath, valueAt} from "./jsonPath.js";
import type {ProblemCollector} from "./ProblemCollector.js";
import {suggestName} from "./suggestName.js";

/** DeepSpeed optimizer names mixz does not run (lower case, as DeepSpeed compares them). */
const otherDeepSpeedOptimizers = new Set(["lamb", "onebitadam", "zerooneadam", "onebitlamb", "adagrad", "lion", "muadam", "muadamw", "musgd"]);
/** DeepSpeed schedulers mixz does not run. */
const otherDeepSpeedSchedulers = new Set(["LRRangeTest", "OneCycle"]);

/**
 * Validates `data` against the config schema, filling defaults into it, and reports every
 * mistake to `problems`. Returns whether the data is valid.
 */
export function validateAgainstSchema(data: unknown, problems: ProblemCollector): boolean {
    const validate = configValidator();
    if (validate(data)) return true;
    const errors = pruneCompositeErrors(validate.errors ?? []);
    const byValue = new Map<string, ErrorObject[]>();
    for (const error of errors) {
        if (error.keyword === "additionalProperties") {
            reportUnknownKey(error, data, problems);
        } else if (error.keyword === "required") {
            reportMissingKey(error, data, problems);
        } else {
            const group = byValue.get(error.instancePath);
            if (group === undefined) byValue.set(error.instancePath, [error]);
            else group.push(error);
        }
    }
    for (const [pointer, group] of byValue) {
        const outermost = group.reduce((a, b) => (b.schemaPath.length < a.schemaPath.length ? b : a));
        const path = jsonPointerToPath(pointer, data);
        problems.error(ErrorCodes.configInvalidValue, path, describeMistake(path, outermost.parentSchema, outermost.data));
    }
    return false;
}

function pruneCompositeErrors(errors: readonly ErrorObject[]): ErrorObject[] {
    let live = errors.filter((error) => error.keyword !== "if");
    const composites = live
        .filter((error) => error.keyword === "anyOf" || error.keyword === "oneOf")
        .sort((a, b) => b.schemaPath.length - a.schemaPath.length);
    for (const composite of composites) {
        if (!live.includes(composite)) continue;
        const prefix = `${composite.schemaPath}/`;
        const branches: unknown[] = Array.isArray(composite.schema) ? composite.schema : [];
        const kind = Array.isArray(composite.data) ? "array" : isPlainObject(composite.data) ? "object" : undefined;
        let keep: number | undefined;
        if (kind !== undefined) {
            const fitting = branches.flatMap((branch, index) => (schemaTypes(branch).includes(kind) ? [index] : []));
            if (fitting.length === 1) keep = fitting[0];
        }
        live = live.filter((error) => {
            if (error === composite) return keep === undefined;
            if (!error.schemaPath.startsWith(prefix)) return true;
            return keep !== undefined && error.schemaPath.startsWith(`${prefix}${keep}/`);
        });
    }
    return live;
}

function schemaTypes(schema: unknown): string[] {
    if (!isPlainObject(schema)) return [];
    const type = schema["type"];
    if (typeof type === "string") return [type];
    return Array.isArray(type) ? type.map(String) : [];
}

function reportUnknownKey(error: ErrorObject, data: unknown, problems: ProblemCollector): void {
    const parent = jsonPointerToPath(error.instancePath, data);
    const key = String((error.params as {additionalProperty: unknown}).additionalProperty);
    const allowed = propertyNames(error.parentSchema);
    let hint = "";
    const suggestion = suggestName(key, allowed);
    const otherSchedulers = parent.join(".") === "scheduler.params" ? schedulersTaking(key) : [];
    if (otherSchedulers.length > 0) {
        const type = String(valueAt(data, ["scheduler", "type"]));
        hint = ` (a parameter of ${otherSchedulers.join(" and ")}, not of ${type})`;
    } else if (suggestion !== undefined) {
        hint = `; did you mean ${JSON.stringify(suggestion)}?`;
    } else if (parent.length === 0) {
        const section = sectionHolding(key);
        if (section !== undefined) hint = `; did you mean ${JSON.stringify(`${section}.${key}`)}?`;
    }
    problems.error(ErrorCodes.configUnknownKey, [...parent, key], `unknown key ${JSON.stringify(key)}${hint}`, "key");
}

function reportMissingKey(error: ErrorObject, data: unknown, problems: ProblemCollector): void {
    const parent = jsonPointerToPath(error.instancePath, data);
    const key = String((error.params as {missingProperty: unknown}).missingProperty);
    let why = "";
    if (parent.length === 2 && parent[0] === "scheduler" && parent[1] === "params") {
        why = ` (scheduler type ${String(valueAt(data, ["scheduler", "type"]))} needs it)`;
    }
    problems.error(ErrorCodes.configInvalidValue, [...parent, key], `missing required key ${JSON.stringify(key)}${why}`, "parent");
}

function describeMistake(path: JsonPath, schema: AnySchemaObject | undefined, value: unknown): string {
    const where = path.join(".");
    if (path.length === 0) return `expected a JSON object at the top level, got ${describeValue(value)}`;
    if (where === "optimizer.type" && typeof value === "string") {
        const known = otherDeepSpeedOptimizers.has(value.toLowerCase()) ? "is a DeepSpeed optimizer that is " : "is ";
        return `${JSON.stringify(value)} ${known}not supported by mixz; use Adam or AdamW`;
    }
    if (where === "scheduler.type" && typeof value === "string" && otherDeepSpeedSchedulers.has(value)) {
        return `${JSON.stringify(value)} is not supported by mixz; use WarmupLR, WarmupDecayLR or WarmupCosineLR`;
    }
    let message = `expected ${describeExpected(schema)}, got ${describeValue(value)}`;
    const allowed = schema?.["enum"];
    if (typeof value === "string" && Array.isArray(allowed)) {
        const suggestion = suggestName(value, allowed.filter((v): v is string => typeof v === "string"));
        if (suggestion !== undefined) message += `; did you mean ${JSON.stringify(suggestion)}?`;
    }
    return message;
}

function propertyNames(schema: AnySchemaObject | undefined): string[] {
    const properties = schema?.["properties"];
    return isPlainObject(properties) ? Object.keys(properties) : [];
}

/** The scheduler types whose params include `key` (from the schema's definitions). */
function schedulersTaking(key: string): string[] {
    const definitions = loadConfigSchema()["definitions"];
    if (!isPlainObject(definitions)) return [];
    const types: readonly (readonly [string, string])[] = [
        ["WarmupLR", "warmupLRParams"],
        ["WarmupDecayLR", "warmupDecayLRParams"],
        ["WarmupCosineLR", "warmupCosineLRParams"]
    ];
    return types.filter(([, definition]) => propertyNames(definitions[definition] as AnySchemaObject | undefined).includes(key)).map(([type]) => type);
}

/** The top-level section whose schema has `key` (for keys written one level too high). */
function sectionHolding(key: string): string | undefined {
    const top = loadConfigSchema()["properties"];
    if (!isPlainObject(top)) return undefined;
    for (const [section, schema] of Object.entries(top)) {
        if (isPlainObject(schema) && propertyNames(schema).includes(key)) return section;
    }
    return undefined;
}

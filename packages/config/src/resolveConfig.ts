/**
 * The config pipeline: (a) parse (syntax and duplicate keys stop here), (b) JSON Schema with
 * defaults, (c) fold aliases into canonical names, (d) resolve "auto" values, the batch triple
 * and the defaults that depend on other keys, (e) cross-field rules. Every problem of (b) to (e)
 * is collected and thrown together in one InputError, in document order.
 */
import {ErrorCodes, InputError} from "@mixz/protocol";
import type {ConfigContext, ConfigResult} from "./api.js";
import {buildResolvedConfig} from "./buildResolvedConfig.js";
import {checkCrossFieldRules} from "./checkCrossFieldRules.js";
import {engineSupportViolations} from "./checkEngineSupport.js";
import {collectWarnings} from "./collectWarnings.js";
import {type JsonPathSegment, formatJsonPath, isPlainObject} from "./jsonPath.js";
import type {JsonSource} from "./JsonSource.js";
import {normalizeAliases} from "./normalizeAliases.js";
import {parseJsonSource} from "./parseJsonSource.js";
import {ProblemCollector} from "./ProblemCollector.js";
import {resolveAutos} from "./resolveAutos.js";
import {resolveBatchSizes} from "./resolveBatchSizes.js";
import {resolveDerivedDefaults} from "./resolveDerivedDefaults.js";
import {topologyFromContext} from "./topologyFromContext.js";
import {validateAgainstSchema} from "./validateAgainstSchema.js";

/**
 * Resolves a config given as JSON text. Throws InputError listing every problem, each with its
 * JSON path, line and column (and context.file).
 */
export function resolveConfigText(text: string, context: ConfigContext = {}): ConfigResult {
    const source = parseJsonSource(text, context.file === undefined ? {} : {file: context.file});
    return resolveParsed(source.value, source, context);
}

/** Resolves a config given as a JavaScript value (programmatic configs: problems carry paths, no positions). */
export function resolveConfigObject(value: unknown, context: ConfigContext = {}): ConfigResult {
    return resolveParsed(value, undefined, context);
}

function resolveParsed(raw: unknown, source: JsonSource | undefined, context: ConfigContext): ConfigResult {
    const topology = topologyFromContext(context);
    const problems = new ProblemCollector(context.file, source);
    // The schema pass writes defaults into what it validates; keep the document as written in `raw`.
    const data = cloneJson(raw, []);
    validateAgainstSchema(data, problems);
    if (!isPlainObject(data)) throw new InputError(problems.sortedErrors());

    normalizeAliases(raw, data, problems);
    collectWarnings(raw, problems, {engine: context.engine === true});
    resolveAutos(data, topology.hiddenSize, problems);
    resolveBatchSizes(data, topology.world, problems);
    resolveDerivedDefaults(raw, data);
    checkCrossFieldRules(data, topology, problems);

    if (problems.errors.length > 0) throw new InputError(problems.sortedErrors());
    const config = buildResolvedConfig(data);
    if (context.engine === true) {
        for (const violation of engineSupportViolations(config)) problems.error(violation.code, violation.path, violation.message);
        if (problems.errors.length > 0) throw new InputError(problems.sortedErrors());
    }
    return {config, warnings: problems.sortedWarnings(), unchecked: problems.unchecked};
}

/** A deep copy of plain objects and arrays (other values are shared); a cycle is an input error. */
function cloneJson(value: unknown, path: JsonPathSegment[], ancestors: Set<object> = new Set()): unknown {
    if (typeof value !== "object" || value === null) return value;
    if (ancestors.has(value)) {
        throw new InputError([{code: ErrorCodes.configInvalidValue, path: formatJsonPath(path), message: "the config contains a cycle (a value that contains itself)"}]);
    }
    if (Array.isArray(value)) {
        ancestors.add(value);
        const copy = value.map((item: unknown, index) => cloneJson(item, [...path, index], ancestors));
        ancestors.delete(value);
        return copy;
    }
    if (!isPlainObject(value)) return value;
    const prototype = Object.getPrototypeOf(value) as unknown;
    if (prototype !== Object.prototype && prototype !== null) return value;
    ancestors.add(value);
    const copy: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
        Object.defineProperty(copy, key, {value: cloneJson(item, [...path, key], ancestors), enumerable: true, writable: true, configurable: true});
    }
    ancestors.delete(value);
    return copy;
}

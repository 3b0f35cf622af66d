/** The schema file itself: where it is, that Ajv's strict mode compiles it, and that it documents every key. */
import assert from "node:assert/strict";
import {existsSync, readdirSync} from "node:fs";
import {dirname, isAbsolute, join} from "node:path";
import {describe, it} from "node:test";
import {configSchemaPath, loadConfigSchema, readConfigFile} from "@mixz/config";
import {adamKeys, bf16Keys, fp16Keys, offloadOptimizerKeys, offloadParamKeys, schedulerKeys, topLevelKeys, zeroKeys} from "../src/buildResolvedConfig.js";
import {aliasGroups} from "../src/normalizeAliases.js";
import {deprecatedZeroKeys, ignoredTopLevelKeys} from "../src/collectWarnings.js";
import {configValidator} from "../src/configSchema.js";

type Schema = Record<string, unknown>;
const schema = loadConfigSchema() as Schema;
const properties = (s: unknown): Record<string, Schema> => ((s as Schema)["properties"] ?? {}) as Record<string, Schema>;
const definitions = schema["definitions"] as Record<string, Schema>;
const zero = properties(schema)["zero_optimization"]!;

/** Properties that deliberately have no default: derived, optional sections, aliases, presence-sensitive keys. */
const noDefault = new Set([
    "$schema",
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "bfloat16",
    "optimizer",
    "optimizer.type",
    "optimizer.params.torch_adam",
    "scheduler",
    "scheduler.type",
    "fp16.initial_scale_power",
    "fp16.loss_scale_window",
    "fp16.hysteresis",
    "fp16.consecutive_hysteresis",
    "fp16.min_loss_scale",
    "warmupDecayLRParams.total_num_steps",
    "warmupCosineLRParams.total_num_steps",
    ...aliasGroups.flatMap((group) => group.aliases.map((alias) => [...group.section, alias].join("."))),
    ...[...deprecatedZeroKeys.keys()].map((key) => `zero_optimization.${key}`),
    ...ignoredTopLevelKeys()
]);

/** Every property schema with its dotted name (definitions are named after the definition). */
function* allProperties(prefix: string, s: Schema): Generator<[string, Schema]> {
    for (const [key, child] of Object.entries(properties(s))) {
        const name = prefix === "" ? key : `${prefix}.${key}`;
        yield [name, child];
        yield* allProperties(name, child);
    }
}

describe("config schema", () => {
    it("is found at configs/ds_config.schema.json from the package", () => {
        assert.ok(isAbsolute(configSchemaPath));
        assert.ok(configSchemaPath.endsWith(join("configs", "ds_config.schema.json")));
        assert.ok(existsSync(configSchemaPath));
    });

    it("is draft-07 and compiles in Ajv's strict mode", () => {
        assert.equal(schema["$schema"], "http://json-schema.org/draft-07/schema#");
        assert.equal(typeof configValidator(), "function");
    });

    const every = [...allProperties("", schema), ...Object.entries(definitions).flatMap(([name, d]) => [...allProperties(name, d)])];

    it("describes every property", () => {
        const missing = every.filter(([name, s]) => {
            const ref = s["$ref"];
            const described = typeof s["description"] === "string" && (s["description"] as string).length > 10;
            return !described && !(typeof ref === "string" && ref === "#/definitions/ignored");
        });
        assert.deepEqual(missing.map(([name]) => name), []);
    });

    it("gives a default to every property except those that must not have one", () => {
        const missing = every.filter(([name, s]) => !("default" in s) && !noDefault.has(name)).map(([name]) => name);
        assert.deepEqual(missing, []);
        const unexpected = every.filter(([name, s]) => "default" in s && noDefault.has(name)).map(([name]) => name);
        assert.deepEqual(unexpected, []);
    });

    it("is strict wherever mixz is strict", () => {
        const open = every.filter(([, s]) => (s["type"] === "object" || (Array.isArray(s["type"]) && s["type"].includes("object"))) && s["additionalProperties"] !== false);
        // scheduler.params is closed per scheduler type in the definitions.
        assert.deepEqual(open.map(([name]) => name), ["scheduler.params"]);
        assert.equal(schema["additionalProperties"], false);
        for (const name of ["warmupLRParams", "warmupDecayLRParams", "warmupCosineLRParams", "bf16Section"]) {
            assert.equal(definitions[name]!["additionalProperties"], false, name);
        }
    });

    it("has exactly the zero_optimization keys of the resolved config, plus aliases and deprecated keys", () => {
        const aliases = aliasGroups.filter((g) => g.section.length === 1).flatMap((g) => g.aliases);
        const expected = [...zeroKeys, ...aliases, ...deprecatedZeroKeys.keys()].sort();
        assert.deepEqual(Object.keys(properties(zero)).sort(), expected);
    });

    it("matches the key lists of the resolved config", () => {
        const top = properties(schema);
        const ignored = ignoredTopLevelKeys();
        assert.deepEqual(
            Object.keys(top).filter((k) => !ignored.includes(k) && k !== "$schema" && k !== "bfloat16").sort(),
            [...topLevelKeys].sort()
        );
        assert.deepEqual(Object.keys(properties(top["fp16"])).sort(), [...fp16Keys].sort());
        assert.deepEqual(Object.keys(properties(definitions["bf16Section"])).sort(), [...bf16Keys].sort());
        assert.deepEqual(Object.keys(properties(properties(top["optimizer"])["params"])).sort(), [...adamKeys, "torch_adam"].sort());
        assert.deepEqual(Object.keys(properties(definitions["warmupLRParams"])).sort(), [...schedulerKeys.WarmupLR].sort());
        assert.deepEqual(Object.keys(properties(definitions["warmupDecayLRParams"])).sort(), [...schedulerKeys.WarmupDecayLR].sort());
        assert.deepEqual(Object.keys(properties(definitions["warmupCosineLRParams"])).sort(), [...schedulerKeys.WarmupCosineLR].sort());
        assert.deepEqual(Object.keys(properties(properties(zero)["offload_param"])).sort(), [...offloadParamKeys].sort());
        assert.deepEqual(Object.keys(properties(properties(zero)["offload_optimizer"])).sort(), [...offloadOptimizerKeys].sort());
    });

    it("accepts the 30 DeepSpeed keys mixz ignores", () => {
        assert.equal(ignoredTopLevelKeys().length, 30);
    });

    it("holds the reference defaults (zeropp.md §3)", () => {
        const z = properties(zero);
        const defaults: Record<string, unknown> = {
            stage: 0,
            contiguous_gradients: true,
            reduce_scatter: true,
            reduce_bucket_size: 5e8,
            allgather_bucket_size: 5e8,
            overlap_comm: null,
            sub_group_size: 1e9,
            stage3_prefetch_bucket_size: 5e7,
            stage3_param_persistence_threshold: 1e5,
            stage3_max_live_parameters: 1e9,
            stage3_max_reuse_distance: 1e9,
            zero_hpz_partition_size: 1,
            mics_shard_size: -1
        };
        for (const [key, value] of Object.entries(defaults)) assert.equal(z[key]!["default"], value, key);
        assert.equal(properties(properties(schema)["mixz"])["quant_block_size"]!["default"], 4096);
    });
});

describe("shipped configs", () => {
    const dir = dirname(configSchemaPath);
    const files = readdirSync(dir).filter((name) => name.endsWith(".json") && name !== "ds_config.schema.json");
    for (const name of files) {
        it(`${name} resolves on 2 nodes of 8 ranks`, () => {
            assert.doesNotThrow(() => readConfigFile(join(dir, name), {nodeSizes: [8, 8]}));
        });
    }
});

/**
 * The JSON Schema of the DeepSpeed config subset mixz understands, `configs/ds_config.schema.json`:
 * editors use it through `"$schema"`, and it is the first validation pass (with Ajv). Its
 * `default`s are the only place plain defaults are written down; Ajv fills them in.
 */
import {readFileSync, realpathSync} from "node:fs";
import {dirname, join} from "node:path";
import {fileURLToPath} from "node:url";
import {Ajv, type AnySchemaObject, type ValidateFunction} from "ajv";
import {ErrorCodes, MixzError} from "@mixz/protocol";

/**
 * Absolute path of configs/ds_config.schema.json (this file is in packages/config/src or dist).
 * From this file's real path: a script's require("mixz") may load it through the workspace's
 * node_modules/@mixz/config symlink, where "../../../configs" would be node_modules/configs.
 */
export const configSchemaPath: string = join(dirname(realpathSync(fileURLToPath(import.meta.url))), "../../../configs/ds_config.schema.json");

/**
 * Keywords that only editors read (VS Code shows them); registered so that Ajv's strict mode
 * accepts them without giving them meaning.
 */
const editorKeywords = ["deprecationMessage", "patternErrorMessage", "markdownDescription"];

let schema: AnySchemaObject | undefined;
let validator: ValidateFunction | undefined;

/** The schema as a JSON object (read once). Throws a platform MixzError when the installation lacks it. */
export function loadConfigSchema(): AnySchemaObject {
    if (schema === undefined) {
        let text: string;
        try {
            text = readFileSync(configSchemaPath, "utf8");
        } catch (error) {
            throw new MixzError(ErrorCodes.fileRead, `mixz is missing its config schema ${configSchemaPath}`, {
                category: "platform",
                cause: error
            });
        }
        schema = JSON.parse(text) as AnySchemaObject;
    }
    return schema;
}

/**
 * The compiled validator: all errors, defaults filled in place, Ajv's strict mode on (a schema
 * mistake is a startup error, not a silently ignored keyword). `verbose` keeps the failing schema
 * and data on each error, which the error translation needs.
 */
export function configValidator(): ValidateFunction {
    if (validator === undefined) {
        const ajv = new Ajv({allErrors: true, useDefaults: true, strict: true, allowUnionTypes: true, verbose: true});
        ajv.addVocabulary(editorKeywords);
        validator = ajv.compile(loadConfigSchema());
    }
    return validator;
}

/**
 * The schema's `default` for a key path (["mixz", "quant_block_size"]), following `$ref`s into
 * definitions: for code that needs a config key's default without a config (the quantize API,
 * `mixz bench`), so the schema stays the only place it is written.
 */
export function schemaDefault(path: readonly string[]): unknown {
    const root = loadConfigSchema();
    const deref = (node: unknown): Record<string, unknown> | undefined => {
        let current = node as Record<string, unknown> | undefined;
        for (let hops = 0; current !== undefined && typeof current["$ref"] === "string" && hops < 8; hops++) {
            const ref = current["$ref"] as string;
            current = ref.replace(/^#\//, "").split("/").reduce<unknown>((at, key) => (at as Record<string, unknown> | undefined)?.[key], root) as Record<string, unknown> | undefined;
        }
        return current;
    };
    let node = deref(root);
    for (const key of path) node = deref((node?.["properties"] as Record<string, unknown> | undefined)?.[key]);
    if (node === undefined || !("default" in node)) {
        throw new MixzError(ErrorCodes.fileRead, `${configSchemaPath} states no default for ${path.join(".")}`, {category: "platform"});
    }
    return node["default"];
}

/**
 * @mixz/config: DeepSpeed JSON configs for mixz. Reads a config with positions for every value,
 * validates it against configs/ds_config.schema.json (filling defaults), folds aliases, resolves
 * Hugging Face "auto" values and derived defaults, and checks the cross-field rules, reporting
 * every problem with file:line:column and its JSON path.
 */
export type {
    ConfigContext,
    ConfigResult,
    ConfigWarningCode,
    OffloadDevice,
    OptimizerType,
    PrecisionName,
    ResolvedAdamParams,
    ResolvedBf16Config,
    ResolvedConfig,
    ResolvedDataTypesConfig,
    ResolvedFp16Config,
    ResolvedLocoParams,
    ResolvedMixzConfig,
    ResolvedOffloadOptimizerConfig,
    ResolvedOffloadParamConfig,
    ResolvedOptimizerConfig,
    ResolvedSchedulerConfig,
    ResolvedZeroConfig,
    WarmupCosineLRParams,
    WarmupDecayLRParams,
    WarmupLRParams,
    WarmupType
} from "./api.js";
export {ConfigWarningCodes, UncheckedRules} from "./api.js";
export {configSchemaPath, loadConfigSchema, schemaDefault} from "./configSchema.js";
export {effectiveAdamWMode} from "./effectiveAdamWMode.js";
export {hpzPlacementConflicts} from "./checkCrossFieldRules.js";
export {engineSupportProblems, engineSupportViolations, type EngineSupportViolation} from "./checkEngineSupport.js";
export {type JsonPath, type JsonPathSegment, formatJsonPath} from "./jsonPath.js";
export {JsonSource, type JsonValue, type SourcePosition} from "./JsonSource.js";
export {type ParseJsonOptions, parseJsonSource} from "./parseJsonSource.js";
export {readConfigFile} from "./readConfigFile.js";
export {resolveConfigObject, resolveConfigText} from "./resolveConfig.js";
export {damerauLevenshtein, suggestName} from "./suggestName.js";

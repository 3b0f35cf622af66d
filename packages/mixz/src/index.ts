export {installRankContext, installedRankContext, kRankContextSymbol} from "./RankContext.js";
export type {RankContext, RankStore} from "./RankContext.js";
export {runtime} from "./runtime.js";
export {initialize} from "./initialize.js";
export type {InitializeOptions} from "./initialize.js";
export {models} from "./models.js";
export type {Batch, LlamaConfig, LlamaModel, Loss, MemoryReport, StepMetrics, StepOutcome, ZeroEngine} from "@mixz/engine";

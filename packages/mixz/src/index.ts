export {installRankContext, installedRankContext, kRankContextSymbol} from "./RankContext.js";
export type {RankContext, RankStore} from "./RankContext.js";
export {runtime} from "./runtime.js";
export {initialize} from "./initialize.js";
export type {InitializeOptions} from "./initialize.js";
export {models} from "./models.js";
export {lora} from "./lora.js";
export type {LoraOptions} from "./lora.js";
export type {Batch, GenerateOptions, LlamaConfig, LlamaModel, Loss, MemoryReport, StepMetrics, StepOutcome, ZeroEngine} from "@mixz/engine";
// pretrained + peft + data
export {data} from "./data.js";
export type {JsonlOptions, TextOptions, TokensOptions} from "./data.js";
export type {JsonlBatches, JsonlDataPosition, JsonlFormat, TextTokenizer} from "@mixz/engine";
export type {LlamaBuilder} from "./models.js";
export type {FromPretrainedOptions, TokenBatches} from "@mixz/engine";
// tokenizers
export {tokenizers} from "./tokenizers.js";
export {generateText} from "./generateText.js";
export type {GeneratedText, GenerateTextOptions} from "./generateText.js";
export type {ChatMessage, ChatTemplateOptions, DecodeOptions, EncodeOptions, Tokenizer} from "@mixz/tokenizers";

export {fromPretrained, cleanUpTokenization} from "./fromPretrained.js";
export type {ChatMessage, ChatTemplateOptions, DecodeOptions, EncodeOptions, Tokenizer} from "./Tokenizer.js";

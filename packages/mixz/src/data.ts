import {jsonlData, textData, tokenData, type JsonlBatches, type JsonlDataOptions, type TextDataOptions, type TokenBatches, type TokenDataOptions} from "@mixz/engine";
import {runtime} from "./runtime.js";

/** Options of data.tokens: rank and worldSize default to this rank's (runtime). */
export type TokensOptions = Omit<TokenDataOptions, "rank" | "worldSize"> & {readonly rank?: number; readonly worldSize?: number};
export type TextOptions = Omit<TextDataOptions, "rank" | "worldSize"> & {readonly rank?: number; readonly worldSize?: number};
/** Options of data.jsonl: rank and worldSize default to this rank's (runtime). */
export type JsonlOptions = Omit<JsonlDataOptions, "rank" | "worldSize"> & {readonly rank?: number; readonly worldSize?: number};

/**
 * Training data sharded by rank (scheme: @mixz/engine data.ts): each rank iterates its own,
 * disjoint micro-batches {inputIds, labels, shape: [microBatch, seqLen]} of a binary token file
 * (`tokens`: little-endian uint16/uint32 ids) or of a file's bytes (`text`: ids 0–255); `jsonl`:
 * instruction-tuning examples (text, prompt/completion or chat messages) tokenized by a tokenizer,
 * labels −100 outside what is trained, padded to seqLen (scheme: @mixz/engine data/jsonl.ts).
 */
export const data: {
    readonly tokens: (file: string, options: TokensOptions) => TokenBatches;
    readonly text: (file: string, options: TextOptions) => TokenBatches;
    readonly jsonl: (file: string, options: JsonlOptions) => Promise<JsonlBatches>;
} = {
    tokens: (file, options) => tokenData(file, {...options, rank: options.rank ?? runtime.rank, worldSize: options.worldSize ?? runtime.worldSize}),
    text: (file, options) => textData(file, {...options, rank: options.rank ?? runtime.rank, worldSize: options.worldSize ?? runtime.worldSize}),
    jsonl: (file, options) => jsonlData(file, {...options, rank: options.rank ?? runtime.rank, worldSize: options.worldSize ?? runtime.worldSize})
};

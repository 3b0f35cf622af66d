import {fromPretrained, type Tokenizer} from "@mixz/tokenizers";

/**
 * Hugging Face tokenizers: `await tokenizers.fromPretrained(dir)` reads a model directory's
 * tokenizer.json (+ tokenizer_config.json, special_tokens_map.json, generation_config.json) and
 * gives encode/decode, the special token ids and the model's chat template (@mixz/tokenizers).
 */
export const tokenizers: {readonly fromPretrained: (dir: string) => Promise<Tokenizer>} = {fromPretrained};

/** What a training script holds after `tokenizers.fromPretrained(dir)`. */

export interface EncodeOptions {
    /** Add the special tokens of the tokenizer's post-processor (LLaMA's `<s>`, BERT's [CLS]/[SEP]). Default true. */
    readonly addSpecialTokens?: boolean;
}

export interface DecodeOptions {
    /** Leave out tokens marked special in tokenizer.json's added_tokens. Default false. */
    readonly skipSpecialTokens?: boolean;
    /**
     * transformers' clean-up of spaces before punctuation and English contractions (" ." → ".",
     * " n't" → "n't"). Default: tokenizer_config.json's clean_up_tokenization_spaces, else false.
     */
    readonly cleanUpTokenizationSpaces?: boolean;
}

/** One chat message as chat templates read it; extra keys (tool_calls, name …) reach the template as they are. */
export interface ChatMessage {
    readonly role: string;
    readonly content: string;
    readonly [key: string]: unknown;
}

export interface ChatTemplateOptions {
    /** Append the template's prompt for the assistant's turn (`add_generation_prompt`). Default false. */
    readonly addGenerationPrompt?: boolean;
    /** Tool definitions (JSON-schema objects), passed to the template as `tools`. */
    readonly tools?: readonly unknown[];
    /** Retrieval documents, passed as `documents`. */
    readonly documents?: readonly unknown[];
    /** Which of several named templates (tokenizer_config's list form); default "default", or "tool_use" when tools are given and it exists. */
    readonly templateName?: string;
    /** More variables for the template (e.g. `{date_string: "26 Jul 2024"}`). */
    readonly variables?: Readonly<Record<string, unknown>>;
}

/**
 * A Hugging Face tokenizer of one model directory. Encoding and decoding run in Hugging Face's
 * Rust library off the main thread, hence the promises; applyChatTemplate is synchronous.
 */
export interface Tokenizer {
    /** The model directory, as given. */
    readonly dir: string;
    /** Vocabulary size including added tokens. */
    readonly vocabSize: number;
    /** The id of the beginning-of-sequence token, or null if the model has none. */
    readonly bosTokenId: number | null;
    /** Every id that ends generation: generation_config.json's eos_token_id (number or list), else tokenizer_config's eos_token. */
    readonly eosTokenIds: readonly number[];
    /** The padding token's id, or null (LLaMA models usually have none). */
    readonly padTokenId: number | null;
    /** The special tokens' strings by role (bos_token, eos_token, unk_token, pad_token …), as the chat template sees them. */
    readonly specialTokens: Readonly<Record<string, string>>;
    /** The chat template chosen by default, or null if the model has none. */
    readonly chatTemplate: string | null;

    /** Token ids of `text`. */
    encode(text: string, options?: EncodeOptions): Promise<number[]>;
    /** Token ids of each text (in parallel inside the Rust library). */
    encodeBatch(texts: readonly string[], options?: EncodeOptions): Promise<number[][]>;
    /** The text of `ids`. */
    decode(ids: readonly number[], options?: DecodeOptions): Promise<string>;
    /** The text of each id list. */
    decodeBatch(ids: readonly (readonly number[])[], options?: DecodeOptions): Promise<string[]>;
    /** The id of a token string (a vocabulary entry, e.g. "<|eot_id|>"), or null. */
    tokenToId(token: string): number | null;
    /** The token string of an id, or null when out of range. */
    idToToken(id: number): string | null;
    /**
     * Renders the model's own chat template (@huggingface/jinja) over `messages`. The result already
     * holds the template's special tokens (e.g. `<|begin_of_text|>`): encode it with
     * `{addSpecialTokens: false}` to avoid a second BOS. Throws MIXZ_ERR_TOKENIZER, naming the
     * directory, when the model has no chat template.
     */
    applyChatTemplate(messages: readonly ChatMessage[], options?: ChatTemplateOptions): string;
}

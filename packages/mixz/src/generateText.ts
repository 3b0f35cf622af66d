/**
 * Text in, text out, for real prompts: `await generateText(engine, tokenizer, prompts, options)`.
 * Each prompt is a string (encoded with the tokenizer's special tokens, BOS included) or a chat
 * (rendered with the model's chat template and its generation prompt). Prompts of different
 * lengths are fine: the engine's generate() takes one length per call (it has no attention mask
 * for left padding yet), so prompts are grouped by token length and each group is one batched
 * call — the same tokens as one call per prompt, fewer calls. Generation stops at the tokenizer's
 * EOS ids (generation_config.json's eos_token_id, else tokenizer_config's eos_token) unless
 * `stopTokenIds` says otherwise. A collective: every rank calls it with the same prompts.
 */
import type {GenerateOptions, ZeroEngine} from "@mixz/engine";
import type {ChatMessage, Tokenizer} from "@mixz/tokenizers";
import {ErrorCodes, MixzError} from "@mixz/protocol";

export interface GenerateTextOptions extends GenerateOptions {
    /** Ends a sequence; default the tokenizer's eosTokenIds. */
    readonly stopTokenIds?: readonly number[];
    /** Drop special tokens from the text (default true). */
    readonly skipSpecialTokens?: boolean;
}

export interface GeneratedText {
    /** The new tokens, up to and without the stop token. */
    readonly ids: number[];
    readonly text: string;
    /** Whether a stop token ended it (false: maxNewTokens did). */
    readonly stopped: boolean;
}

export async function generateText(
    engine: ZeroEngine,
    tokenizer: Tokenizer,
    prompts: readonly (string | readonly ChatMessage[])[],
    options: GenerateTextOptions = {}
): Promise<GeneratedText[]> {
    if (!Array.isArray(prompts) || prompts.length === 0) {
        throw new MixzError(ErrorCodes.batch, "generateText(): prompts must be a non-empty array of strings or chats", {category: "user"});
    }
    const encoded = await Promise.all(prompts.map(async (prompt, i) => {
        if (typeof prompt === "string") return tokenizer.encode(prompt, {addSpecialTokens: true});
        if (Array.isArray(prompt)) return tokenizer.encode(tokenizer.applyChatTemplate(prompt, {addGenerationPrompt: true}), {addSpecialTokens: false});
        throw new MixzError(ErrorCodes.batch, `generateText(): prompts[${i}] must be a string or an array of {role, content}`, {category: "user"});
    }));
    const stops = options.stopTokenIds ?? tokenizer.eosTokenIds;
    const maxNewTokens = options.maxNewTokens ?? 32;
    // One engine call per prompt length, in order of first appearance (the same on every rank).
    const groups = new Map<number, number[]>();
    encoded.forEach((ids, i) => {
        if (ids.length === 0) throw new MixzError(ErrorCodes.batch, `generateText(): prompts[${i}] encodes to no token`, {category: "user"});
        groups.set(ids.length, [...(groups.get(ids.length) ?? []), i]);
    });
    const results: GeneratedText[] = new Array(prompts.length);
    for (const [length, members] of groups) {
        const promptIds = Int32Array.from(members.flatMap((i) => encoded[i]!));
        const out = await engine.generate(promptIds, {...options, maxNewTokens, stopTokenIds: stops, shape: [members.length, length]});
        for (const [row, i] of members.entries()) {
            const generated = Array.from(out.subarray(row * maxNewTokens, (row + 1) * maxNewTokens));
            const end = generated.findIndex((id) => stops.includes(id));
            const ids = end < 0 ? generated : generated.slice(0, end);
            results[i] = {ids, text: await tokenizer.decode(ids, {skipSpecialTokens: options.skipSpecialTokens ?? true}), stopped: end >= 0};
        }
    }
    return results;
}

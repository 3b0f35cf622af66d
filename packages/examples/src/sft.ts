// LoRA supervised fine-tuning of a Hugging Face model directory on instruction data (JSONL), the
// DeepSpeed-Chat step-1 habit with MixZ++ (int8 frozen weights, hpZ) from the config:
//
//   bin/mixz launch --hostfile configs/hostfile.local --config configs/mixzpp-local.json \
//       packages/examples/src/sft.ts --model DIR --data train.jsonl [--eval eval.jsonl]
//       [--format messages|prompt_completion|text] [--steps N] [--seq-len N] [--r N] [--packing] [--out DIR]
//       [--log-every N] [--max-new-tokens N]
//
// The model directory holds config.json, the weights and the tokenizer files (tokenizer.json,
// tokenizer_config.json with a chat_template for format "messages"). The loss counts only the
// answers (assistant turns, or completions), as TRL's SFT does; batches are one example per row,
// padded. Rank 0 prints the held-out loss and a greedy answer to the first held-out prompt before
// and after training; the adapter is saved in PEFT's layout to OUT/adapter. The launcher's
// progress line shows the loss and tokens/s. sftPrepare.ts makes a model and data to try it with.
import {readFileSync} from "node:fs";
import {join, resolve} from "node:path";
import {data, initialize, lora, models, runtime, tokenizers, type Batch} from "mixz";

const args = process.argv.slice(2);
const value = (name: string): string | undefined => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : undefined);
const count = (name: string, fallback: number): number => {
    const text = value(name);
    const n = text === undefined ? fallback : Number(text);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} takes a positive whole number, got ${JSON.stringify(text)}`);
    return n;
};
const modelDir = value("model");
const trainFile = value("data");
if (modelDir === undefined || trainFile === undefined) throw new Error("usage: sft.ts --model DIR --data train.jsonl [--eval eval.jsonl] (see the header of packages/examples/src/sft.ts)");
const evalFile = value("eval");
const format = (value("format") ?? "messages") as "messages" | "prompt_completion" | "text";
const steps = count("steps", 200);
const seqLen = count("seq-len", 64);
const logEvery = count("log-every", 25);
const maxNewTokens = count("max-new-tokens", 24);
const out = resolve(value("out") ?? "mixz-sft-output");
const config = runtime.config;
if (config === null) throw new Error("launch with --config, e.g. configs/mixzpp-local.json");
const micro = config.train_micro_batch_size_per_gpu ?? 1;
const log = (line: string): void => {
    if (runtime.rank === 0) console.log(line);
};

const tokenizer = await tokenizers.fromPretrained(modelDir);
const base = await models.llama.fromPretrained(modelDir);
const engine = await initialize({model: base, config});
lora.apply(base, {r: count("r", 8), alpha: 2 * count("r", 8), dropout: 0.05, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]});
const quantized = config.zero_optimization.zero_quantized_nontrainable_weights ? await engine.quantizeNontrainableParams() : null;
const trainable = engine.parameters.filter((p) => p.trainable).reduce((sum, p) => sum + p.numel, 0);
const total = engine.parameters.reduce((sum, p) => sum + p.numel, 0);
log(`sft: ${modelDir} (${total.toLocaleString("en-US")} parameters, ${trainable.toLocaleString("en-US")} trainable LoRA), ` +
    `${engine.worldSize} ranks, hpZ groups of ${engine.hpzSize}, frozen weights ${quantized === null ? "in the model dtype" : "int8"}`);

const packing = args.includes("--packing");
const train = await data.jsonl(trainFile, {tokenizer, format, seqLen, microBatch: micro, epochs: Infinity, seed: 1, truncation: true, packing});
log(`   train: ${train.examples} examples from ${trainFile} (${train.truncated} cut to ${seqLen} tokens)${packing ? `, packed into ${train.rows} rows` : ""}`);
// Held-out batches: every rank evaluates the same rows (worldSize 1, rank 0), so the loss is the file's.
const heldOut = evalFile === undefined ? null : [...(await data.jsonl(evalFile, {tokenizer, format, seqLen, microBatch: micro, shuffle: false, rank: 0, worldSize: 1, truncation: true}))];

async function heldOutLoss(): Promise<string> {
    if (heldOut === null) return "(no --eval)";
    let sum = 0;
    for (const batch of heldOut) sum += (await engine.evaluate(batch)).value;
    return (sum / heldOut.length).toFixed(4);
}

/** The first held-out (else training) example's prompt, as the model sees it before its answer. */
async function firstPrompt(): Promise<{text: string; ids: Int32Array}> {
    const line = JSON.parse(readFileSync(evalFile ?? trainFile!, "utf8").split("\n").find((l) => l.trim() !== "")!) as Record<string, unknown>;
    let text: string;
    let ids: number[];
    if (format === "messages") {
        const messages = line["messages"] as {role: string; content: string}[];
        const upTo = messages.findIndex((m) => m.role === "assistant");
        text = messages[upTo - 1]?.content ?? "";
        ids = await tokenizer.encode(tokenizer.applyChatTemplate(messages.slice(0, upTo), {addGenerationPrompt: true}), {addSpecialTokens: false});
    } else {
        text = String(line[format === "text" ? "text" : "prompt"]).slice(0, format === "text" ? 40 : undefined);
        ids = [...(tokenizer.bosTokenId === null ? [] : [tokenizer.bosTokenId]), ...(await tokenizer.encode(text, {addSpecialTokens: false}))];
    }
    return {text, ids: Int32Array.from(ids)};
}

async function answer(label: string): Promise<void> {
    const prompt = await firstPrompt();
    const room = Math.min(maxNewTokens, base.config.maxSeqLen - prompt.ids.length);
    const generated = Array.from(await engine.generate(prompt.ids, {maxNewTokens: room, temperature: 0, stopTokenIds: tokenizer.eosTokenIds}));
    const end = generated.findIndex((id) => tokenizer.eosTokenIds.includes(id));
    log(`   ${label}: ${JSON.stringify(prompt.text)} → ${JSON.stringify(await tokenizer.decode(end < 0 ? generated : generated.slice(0, end), {skipSpecialTokens: true}))}`);
}

log(`   held-out loss before: ${await heldOutLoss()}`);
await answer("answer before");
const started = Date.now();
const iterator = train[Symbol.iterator]();
let window: number[] = [];
let outside = 0;
for (let step = 1; step <= steps; step++) {
    for (let k = 0; k < engine.gradientAccumulationSteps; k++) {
        const batch: Batch = iterator.next().value!;
        const loss = await engine.forward(batch);
        window.push(loss.value);
        await engine.backward(loss);
        await engine.step();
    }
    outside += engine.lastStepMetrics?.outsideMs ?? 0;
    if (step % logEvery === 0 || step === steps) {
        log(`sft step ${String(step).padStart(4)}/${steps}  loss ${(window.reduce((a, b) => a + b, 0) / window.length).toFixed(4)}  lr ${engine.lr.toExponential(2)}`);
        window = [];
    }
}
log(`   held-out loss after ${steps} steps: ${await heldOutLoss()} (${((Date.now() - started) / 1000).toFixed(1)} s; ` +
    `${(outside / steps).toFixed(2)} ms per step outside the engine: batches are tokenized before training, never on the step's path)`);
await answer("answer after");
const adapterDir = join(out, "adapter");
await lora.savePeftAdapter(engine, adapterDir);
log(`   PEFT adapter saved: ${adapterDir}`);
await engine.dispose();

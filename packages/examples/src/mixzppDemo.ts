// The README's main job (`npm run demo`): Mixed Precision ZeRO++ LoRA training on this machine.
//
//   bin/mixz launch --hostfile configs/hostfile.local --config configs/mixzpp-local.json \
//       packages/examples/src/mixzppDemo.ts [--pretrain-steps N] [--lora-steps N] [--out DIR]
//       [--base DIR] [--pretrain-text FILE] [--lora-text FILE] [--lora-eval FILE] [--no-samples] [--log-every N]
//
// Two phases, on real text that is already on the machine (nothing downloaded or generated):
//   1. Pretraining: a small byte-level LLaMA (vocabulary = the 256 byte values) learns English
//      license prose (/usr/share/common-licenses: GPL, LGPL, Apache, MPL, GFDL) with full ZeRO-3,
//      every parameter trainable; it is exported as a Hugging Face model to OUT/base.
//   2. LoRA, the flow of DeepSpeed's Mixed Precision ZeRO++ tutorial: initialize() on the exported
//      base, lora.apply() (the base is frozen), engine.quantizeNontrainableParams() (frozen weights
//      become int8 blocks; qwZ), then train the adapters on Python source code from the Python
//      standard library (/usr/lib/python3.X/argparse.py; the held-out loss is measured on
//      textwrap.py). Fallback where Python is missing: the Perl modules of perl-base (an essential
//      Debian package). With zero_hpz_partition_size = ranks per node (hpZ), frozen weights are
//      gathered inside the node only. The adapters are saved in Hugging Face PEFT's layout.
// Rank 0 prints generation samples before and after the LoRA phase, the memory of each category
// on rank 0 (int8 frozen weights next to the 16-bit storage they replace) and the bytes rank 0
// received per step inside its node and across nodes. Every other line is the launcher's.
//
// --base DIR skips phase 1 and starts phase 2 from that Hugging Face model (the convergence test
// runs phase 2 twice on one base, with and without MixZ++). Phase 2's per-step losses are printed
// as `lora-loss STEP VALUE` lines with --log-every 1.
import {existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync} from "node:fs";
import {join, resolve} from "node:path";
import {initialize, lora, models, data, runtime, type Batch, type LlamaModel, type MemoryReport, type StepMetrics, type ZeroEngine} from "mixz";

const args = process.argv.slice(2);
const value = (name: string): string | undefined => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : undefined);
const count = (name: string, fallback: number): number => {
    const text = value(name);
    const n = text === undefined ? fallback : Number(text);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} takes a whole number, got ${JSON.stringify(text)}`);
    return n;
};
const pretrainSteps = count("pretrain-steps", 900);
const loraSteps = count("lora-steps", 300);
const logEvery = count("log-every", 50);
const samples = !args.includes("--no-samples");
const out = resolve(value("out") ?? "mixz-demo-output");
const config = runtime.config;
if (config === null) throw new Error("launch with --config configs/mixzpp-local.json");
const micro = config.train_micro_batch_size_per_gpu ?? 4;
const zero = config.zero_optimization;
const seqLen = 64;
const {rank, worldSize} = runtime;
const log = (line: string): void => {
    if (rank === 0) console.log(line);
};

const modelConfig = {vocabSize: 256, hidden: 128, layers: 4, heads: 4, kvHeads: 2, intermediate: 344, maxSeqLen: 128, seed: 1};
const loraOptions = {r: 8, alpha: 16, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]};

// ---- Texts ---------------------------------------------------------------------------------------

const licenseDir = "/usr/share/common-licenses";
const licenseNames = ["GPL-3", "LGPL-3", "GPL-2", "LGPL-2.1", "Apache-2.0", "MPL-2.0", "GFDL-1.3"];

/**
 * Source code for phase 2: Python's argparse.py, optparse.py and configparser.py (train) and
 * textwrap.py (held out), newest Python 3 first (libpython3.X-minimal, which the bootstrap's python3
 * brings); else Perl modules of perl-base, an essential Debian package.
 */
function codeTexts(): {train: readonly string[]; heldOut: string; language: string} {
    const pythons = existsSync("/usr/lib") ? readdirSync("/usr/lib").filter((name) => /^python3\.\d+$/.test(name)) : [];
    pythons.sort((a, b) => Number(b.split(".")[1]) - Number(a.split(".")[1]));
    for (const python of pythons) {
        const dir = join("/usr/lib", python);
        const train = ["argparse.py", "optparse.py", "configparser.py"].map((name) => join(dir, name));
        if ([...train, join(dir, "textwrap.py")].every((file) => existsSync(file))) {
            return {train, heldOut: join(dir, "textwrap.py"), language: `Python source (${python} standard library)`};
        }
    }
    for (const arch of existsSync("/usr/lib") ? readdirSync("/usr/lib") : []) {
        const dir = join("/usr/lib", arch, "perl-base");
        const train = ["File/Temp.pm", "Carp.pm", "POSIX.pm"].map((name) => join(dir, name));
        if ([...train, join(dir, "Getopt/Long.pm")].every((file) => existsSync(file))) {
            return {train, heldOut: join(dir, "Getopt/Long.pm"), language: "Perl source (perl-base modules)"};
        }
    }
    throw new Error("no Python 3 standard library (/usr/lib/python3.X/argparse.py) nor perl-base modules found: install python3, or pass --lora-text FILE --lora-eval FILE");
}

const code = value("lora-text") !== undefined
    ? {train: [value("lora-text")!], heldOut: value("lora-eval") ?? value("lora-text")!, language: "the given text"}
    : codeTexts();

// ---- Helpers -------------------------------------------------------------------------------------

/** The files, concatenated into OUT/name by rank 0 (data.text reads one file); the other ranks wait for it. */
async function concatenate(files: readonly string[], name: string): Promise<string> {
    const path = join(out, name);
    if (rank === 0) writeFileSync(path, Buffer.concat(files.map((file) => readFileSync(file))));
    await runtime.store.barrier(`demo/${name}`, 60_000);
    return path;
}

/** Fixed windows of a file, the same on every rank (evaluation batches). */
function windows(file: string, batches: number): Batch[] {
    const text = readFileSync(file);
    const result: Batch[] = [];
    const stride = Math.max(1, Math.floor((text.length - seqLen) / (batches * micro)));
    for (let b = 0; b < batches; b++) {
        const ids = new Int32Array(micro * seqLen);
        for (let m = 0; m < micro; m++) {
            const start = (b * micro + m) * stride;
            for (let t = 0; t < seqLen; t++) ids[m * seqLen + t] = text[start + t]!;
        }
        result.push({inputIds: ids, labels: ids.slice(), shape: [micro, seqLen]});
    }
    return result;
}

async function heldOutLoss(engine: ZeroEngine, batches: readonly Batch[]): Promise<number> {
    let sum = 0;
    for (const batch of batches) sum += (await engine.evaluate(batch)).value;
    return sum / batches.length;
}

/** Bytes as text: printable ASCII and newlines as they are, anything else as \xNN. */
function printable(ids: ArrayLike<number>): string {
    let text = "";
    for (let i = 0; i < ids.length; i++) {
        const b = ids[i]!;
        text += b === 10 || (b >= 32 && b < 127) ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`;
    }
    return text;
}

async function sample(engine: ZeroEngine, prompt: string, label: string): Promise<void> {
    const ids = Int32Array.from(Buffer.from(prompt, "latin1"));
    const generated = await engine.generate(ids, {maxNewTokens: 128 - ids.length, temperature: 0.6, topK: 8, seed: 7});
    log(`${label}:`);
    for (const line of printable([...ids, ...generated]).split("\n")) log(`    | ${line}`);
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(3)} MiB`;
const kib = (bytes: number): string => `${(bytes / 1024).toFixed(1)} KiB`;

/** Trains `steps` optimizer steps on `batches`; returns the mean loss of the first and last `logEvery` steps and the per-step metrics. */
async function train(engine: ZeroEngine, phase: string, batches: Iterable<Batch>, steps: number): Promise<StepMetrics[]> {
    const metrics: StepMetrics[] = [];
    const iterator = batches[Symbol.iterator]();
    let window: number[] = [];
    for (let step = 1; step <= steps; step++) {
        for (let k = 0; k < engine.gradientAccumulationSteps; k++) {
            const next = iterator.next();
            if (next.done === true) throw new Error(`${phase}: the data ended before step ${step}`);
            const loss = await engine.forward(next.value);
            window.push(loss.value);
            await engine.backward(loss);
            await engine.step();
        }
        metrics.push(engine.lastStepMetrics!);
        if (logEvery > 0 && (step % logEvery === 0 || step === steps)) {
            const mean = window.reduce((a, b) => a + b, 0) / window.length;
            log(logEvery === 1 ? `${phase}-loss ${step} ${mean.toPrecision(8)}` : `${phase} step ${String(step).padStart(4)}/${steps}  loss ${mean.toFixed(4)}  lr ${engine.lr.toExponential(2)}`);
            window = [];
        }
    }
    return metrics;
}

// ---- Phase 1: pretraining with full ZeRO-3 -------------------------------------------------------

mkdirSync(out, {recursive: true});
let baseDir = value("base");
const started = performance.now();
log(`world: ${worldSize} ranks on ${runtime.crossSize} nodes; ZeRO stage ${zero.stage}, hpZ groups of ${zero.zero_hpz_partition_size}, ` +
    `frozen weights int8: ${zero.zero_quantized_nontrainable_weights}, ${config.bf16?.enabled === true ? "bf16" : config.fp16?.enabled === true ? "fp16" : "fp32"} model, ` +
    `micro-batch ${micro} × ${seqLen} bytes per rank`);
if (baseDir === undefined) {
    const files = value("pretrain-text") !== undefined ? [value("pretrain-text")!] : licenseNames.map((name) => join(licenseDir, name)).filter((file) => existsSync(file));
    if (files.length === 0) throw new Error(`no license texts in ${licenseDir}: pass --pretrain-text FILE, or --base DIR (a pretrained model)`);
    const corpus = await concatenate(files, "licenses.txt");
    const model = models.llama(modelConfig);
    const engine = await initialize({model, config});
    const parameters = engine.parameters.reduce((n, p) => n + p.numel, 0);
    log("");
    log(`== phase 1: pretraining a ${parameters.toLocaleString("en")}-parameter byte-level LLaMA from scratch (ZeRO-3, all parameters trainable)`);
    log(`   text: ${files.map((file) => file.replace(`${licenseDir}/`, "")).join(", ")}${files[0]!.startsWith(licenseDir) ? ` from ${licenseDir}` : ""} (${readFileSync(corpus).length.toLocaleString("en")} bytes)`);
    const licenseEval = windows(join(licenseDir, existsSync(join(licenseDir, "Artistic")) ? "Artistic" : "BSD"), 2);
    log(`   held-out loss (${existsSync(join(licenseDir, "Artistic")) ? "Artistic" : "BSD"} license) before: ${(await heldOutLoss(engine, licenseEval)).toFixed(3)} (uniform over 256 bytes: ${Math.log(256).toFixed(3)})`);
    const batches = data.text(corpus, {seqLen, microBatch: micro, seed: 1, epochs: Infinity});
    await train(engine, "pretrain", batches, pretrainSteps);
    log(`   held-out loss after ${pretrainSteps} steps: ${(await heldOutLoss(engine, licenseEval)).toFixed(3)}`);
    if (samples) await sample(engine, "This License ", "   sample after pretraining (prompt \"This License \")");
    baseDir = join(out, "base");
    await engine.exportPretrained(baseDir);
    log(`   base model saved (Hugging Face layout): ${baseDir}`);
    await engine.dispose();
}

// ---- Phase 2: LoRA with Mixed Precision ZeRO++ ---------------------------------------------------

const base: LlamaModel = await models.llama.fromPretrained(baseDir);
const engine = await initialize({model: base, config});
lora.apply(base, loraOptions);
const quantize = zero.zero_quantized_nontrainable_weights;
const quantized = quantize ? await engine.quantizeNontrainableParams() : null;
const trainable = engine.parameters.filter((p) => p.trainable).reduce((n, p) => n + p.numel, 0);
const frozen = engine.parameters.filter((p) => !p.trainable).reduce((n, p) => n + p.numel, 0);
log("");
log(`== phase 2: LoRA (r ${loraOptions.r}, alpha ${loraOptions.alpha}, ${loraOptions.targetModules.join(" ")}) on ${code.language}`);
log(`   trainable ${trainable.toLocaleString("en")} of ${(trainable + frozen).toLocaleString("en")} parameters (f = ${(frozen / (trainable + frozen)).toFixed(3)} frozen); ` +
    (quantized === null ? "frozen weights kept in the model dtype (zero_quantized_nontrainable_weights is off)"
        : `quantizeNontrainableParams(): ${quantized.parameters} frozen parameters are int8 now`));
const codeCorpus = await concatenate(code.train, "code.txt");
log(`   text: ${code.train.join(", ")} (${readFileSync(codeCorpus).length.toLocaleString("en")} bytes); held out: ${code.heldOut}`);
const codeEval = windows(code.heldOut, 2);
log(`   held-out loss before: ${(await heldOutLoss(engine, codeEval)).toFixed(3)}`);
const prompt = code.language.startsWith("Perl") ? "sub new {\n    my " : "    def __init__(self, ";
if (samples) await sample(engine, prompt, "   sample before LoRA");
const batches = data.text(codeCorpus, {seqLen, microBatch: micro, seed: 2, epochs: Infinity});
const loraStarted = performance.now();
const metrics = await train(engine, "lora", batches, loraSteps);
// Right after the last step: evaluation, generation and saving gather the adapters again (hpZ
// secondaries of trainable parameters live until the next step).
const memory = engine.memoryReport();
const loraSeconds = (performance.now() - loraStarted) / 1000;
log(`   held-out loss after ${loraSteps} steps: ${(await heldOutLoss(engine, codeEval)).toFixed(3)} (${loraSeconds.toFixed(1)} s)`);
if (samples) await sample(engine, prompt, "   sample after LoRA");
const adapterDir = join(out, "adapter");
await lora.savePeftAdapter(engine, adapterDir);
log(`   PEFT adapter saved: ${adapterDir} (adapter_config.json, adapter_model.safetensors; base ${baseDir})`);

// ---- Summary (rank 0) ----------------------------------------------------------------------------

summary(memory, metrics);
log(`done in ${((performance.now() - started) / 1000).toFixed(0)} s`);
await engine.dispose();

function summary(memory: MemoryReport, steps: readonly StepMetrics[]): void {
    // The groups the engine runs with (its ZeRO++ policy), not a second reading of the config.
    const h = engine.hpzSize > 1 ? engine.hpzSize : 0;
    const ranksPerNode = engine.zeroPlusPlus.ranksPerNode;
    // The frozen parameters that are partitioned (small ones are kept whole on every rank), and
    // what their partitions would take in 16-bit storage: the primary, plus the hpZ secondary.
    let frozenElements = 0;
    let frozen16 = 0;
    for (const p of engine.parameters) {
        if (p.trainable || p.persistent) continue;
        frozenElements += p.numel;
        frozen16 += 2 * p.partition + (h > 0 ? 2 * Math.ceil(p.numel / h) : 0);
    }
    const frozenInt8 = memory.quantizedPartitions + memory.secondaryPartitions + memory.quantScales;
    log("");
    log("== summary (rank 0)");
    log(`   memory by category: frozen int8 partitions ${mib(memory.quantizedPartitions)}, hpZ secondaries ${mib(memory.secondaryPartitions)}, ` +
        `quantization scales ${mib(memory.quantScales)}, 16-bit partitions ${mib(memory.parameterPartitions)}, gradients ${mib(memory.gradientPartitions)}, ` +
        `fp32 master ${mib(memory.masterWeights)}, Adam states ${mib(memory.optimizerStates)}, small parameters kept whole ${mib(memory.persistentParameters)}, ` +
        `activations ${mib(memory.activations)}, communication buffers ${mib(memory.communicationBuffers)}`);
    if (quantized !== null) {
        log(`   frozen weights: ${mib(frozenInt8)} as int8 + scales (primary + hpZ secondary partitions), ${mib(frozen16)} in 16-bit storage: ${(frozenInt8 / frozen16).toFixed(2)}×`);
    }
    if (steps.length < 2) return;
    // Step 1's counters also hold what happened before it (quantization, the sample), so the mean
    // is over steps 2–N.
    const later = steps.slice(1);
    const mean = (key: keyof StepMetrics["traffic"]): number => later.reduce((n, m) => n + m.traffic[key], 0) / later.length;
    const frozenCross = later.reduce((n, m) => n + m.traffic.frozenGatherCross, 0);
    log(`   bytes received per LoRA step (mean of steps 2–${steps.length}), intra-node / cross-node: frozen weights ${kib(mean("frozenGatherIntra"))} / ${kib(mean("frozenGatherCross"))}, ` +
        `adapter gathers ${kib(mean("trainableGatherIntra"))} / ${kib(mean("trainableGatherCross"))}, adapter gradients ${kib(mean("reduceIntra"))} / ${kib(mean("reduceCross"))}`);
    // zeropp.md §4.2: ZeRO-3 gathers the frozen weights in forward and in backward, in 16 bits,
    // from every rank; a rank receives (N − ranks per node)/N of each from other nodes.
    const zero3Cross = 2 * 2 * frozenElements * (worldSize - ranksPerNode) / worldSize;
    log(`   frozen-weight bytes that crossed nodes in steps 2–${steps.length}: ${frozenCross} ` +
        `(ZeRO-3 + LoRA with 16-bit frozen weights and no hpZ would receive ≈ ${kib(zero3Cross)} per step across nodes, zeropp.md §4.2)`);
}

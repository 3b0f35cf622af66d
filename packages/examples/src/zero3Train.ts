// ZeRO-3 training from scratch (issue 5's example):
//
//   mixz launch --nproc 2 --config configs/zero3.json packages/examples/src/zero3Train.ts [--steps N] [--text FILE]
//
// A small byte-level LLaMA (vocabulary = the 256 byte values) learns the GNU GPL text that every
// Debian machine has in /usr/share/common-licenses (or --text FILE): real text already on the
// machine, nothing downloaded. Each rank draws its own windows of the text (data parallelism);
// parameters, gradients and optimizer states are partitioned over the ranks (ZeRO stage 3).
// Rank 0 prints the loss every 10 steps, a held-out loss at the start and the end, and the
// per-rank memory report.
import {readFileSync} from "node:fs";
import {initialize, models, runtime} from "mixz";

const args = process.argv.slice(2);
const value = (name: string): string | undefined => {
    const at = args.indexOf(`--${name}`);
    return at >= 0 ? args[at + 1] : undefined;
};
const steps = Number(value("steps") ?? 300);
const textFile = value("text") ?? "/usr/share/common-licenses/GPL-3";
const seq = 64;
const config = runtime.config;
if (config === null) throw new Error("launch with --config configs/zero3.json");
const micro = config.train_micro_batch_size_per_gpu ?? 4;

const text = readFileSync(textFile);
// The last tenth is held out for evaluation.
const split = Math.floor(text.length * 0.9);
const model = models.llama({vocabSize: 256, hidden: 128, layers: 4, heads: 4, kvHeads: 2, intermediate: 344, maxSeqLen: seq, seed: 1});
const engine = await initialize({model, config});
const log = (line: string): void => {
    if (runtime.rank === 0) console.log(line);
};
log(`model: ${engine.parameters.reduce((n, p) => n + p.numel, 0).toLocaleString("en")} parameters, ${engine.worldSize} ranks, ` +
    `micro-batch ${micro} × ${seq} bytes, ${engine.gradientAccumulationSteps} accumulation step(s), text ${textFile} (${text.length} bytes)`);

// A small deterministic generator per rank: ranks draw different windows.
let state = 12345 + 7919 * runtime.rank;
const random = (): number => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
};

function batch(from: number, to: number, pick: () => number): {inputIds: Int32Array; labels: Int32Array; shape: [number, number]} {
    const ids = new Int32Array(micro * seq);
    for (let b = 0; b < micro; b++) {
        const start = from + Math.floor(pick() * (to - from - seq));
        for (let t = 0; t < seq; t++) ids[b * seq + t] = text[start + t]!;
    }
    return {inputIds: ids, labels: ids.slice(), shape: [micro, seq]};
}

async function heldOut(): Promise<number> {
    let evalState = 99;
    const pick = (): number => {
        evalState = (evalState * 1103515245 + 12345) % 2147483648;
        return evalState / 2147483648;
    };
    let sum = 0;
    for (let i = 0; i < 4; i++) sum += (await engine.evaluate(batch(split, text.length, pick))).value;
    return sum / 4;
}

log(`held-out loss before training: ${(await heldOut()).toFixed(4)} (uniform over bytes: ${Math.log(256).toFixed(4)})`);
const started = performance.now();
let recent: number[] = [];
for (let step = 1; step <= steps; step++) {
    for (let k = 0; k < engine.gradientAccumulationSteps; k++) {
        const loss = await engine.forward(batch(0, split, random));
        recent.push(loss.value);
        await engine.backward(loss);
        await engine.step();
    }
    if (step % 10 === 0 || step === steps) {
        const mean = recent.reduce((a, b) => a + b, 0) / recent.length;
        log(`step ${String(step).padStart(4)}  loss ${mean.toFixed(4)}  lr ${engine.lr.toExponential(2)}`);
        recent = [];
    }
}
const seconds = (performance.now() - started) / 1000;
log(`held-out loss after ${steps} steps: ${(await heldOut()).toFixed(4)}; ${seconds.toFixed(1)} s, ` +
    `${Math.round((steps * engine.gradientAccumulationSteps * micro * seq * engine.worldSize) / seconds)} tokens/s over ${engine.worldSize} ranks`);
const memory = engine.memoryReport();
const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(2)} MiB`;
log(`memory on rank 0: parameter partitions ${mib(memory.parameterPartitions)}, gradients ${mib(memory.gradientPartitions)}, ` +
    `fp32 master ${mib(memory.masterWeights)}, Adam states ${mib(memory.optimizerStates)}, ` +
    `persistent (small, always gathered) ${mib(memory.persistentParameters)}, gathered (peak) ${mib(memory.gatheredParametersPeak)}, ` +
    `activations ${mib(memory.activations)}, communication buffers ${mib(memory.communicationBuffers)}`);
await engine.dispose();

#!/usr/bin/env node
// `npm run bench`: runs every benchmark script registered below, each of which measures mixz next
// to a peer in the same run and rewrites its section of docs/BENCHMARKS.md.
import {spawnSync} from "node:child_process";
import {fileURLToPath} from "node:url";

/** [name, script path relative to the repo root, arguments]. */
const benchmarks = [
    // Launch overhead (time to a joined world, total wall time) and failure detection, next to torchrun.
    ["launch-peers", "scripts/bench/launch-peers", []],
    // qwZ quantize/dequantize throughput next to single-thread memcpy.
    ["quantize-throughput", "scripts/bench/quantize-throughput", []],
    // fp32 all-gather busbw next to OpenMPI's MPI_Allgather and PyTorch gloo (N = 2, 4), and the
    // int8-quantized fp16 all-gather next to the plain fp16 one; writes docs/allgather-busbw.svg too.
    ["allgather-peers", "scripts/bench/allgather-peers", []],
    // One ZeRO-3 training step of a ~25M-parameter LLaMA next to the same model in PyTorch; the
    // gather time hidden by prefetch on 2 ranks; model-state memory against zeropp.md §4.1.
    ["train-step-peers", "scripts/bench/train-step-peers", []],
    // LoRA on 2 plan nodes × 2 ranks: ZeRO-3 (frozen 16-bit) next to MixZ++ (frozen int8 + hpZ):
    // memory by category, step time (also over a tc-shaped cross-node link), intra/cross-node bytes
    // per step next to zeropp.md §4.1/§4.2.
    ["mixzpp-peers", "scripts/bench/mixzpp-peers", []],
    // Tokenizer encode tokens/s on one core: the Rust binding mixz uses next to the pure-JS port.
    ["tokenizer-throughput", "scripts/bench/tokenizer-throughput", []]
];

const root = fileURLToPath(new URL("../..", import.meta.url));
if (benchmarks.length === 0) {
    console.log("bench: no benchmarks are registered yet; the communication benchmarks (mixz bench allgather, " +
        "scripts/bench/allgather-peers against OpenMPI and PyTorch gloo) come with the communication layer");
    process.exit(0);
}
let failed = 0;
for (const [name, script, args] of benchmarks) {
    console.log(`bench: ${name}`);
    const result = spawnSync(script, args, {cwd: root, stdio: "inherit"});
    if (result.status !== 0) failed++;
}
process.exit(failed === 0 ? 0 : 1);

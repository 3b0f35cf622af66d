// Hugging Face models across real rank processes: with 2 ranks each rank reads only its own slices
// of a sharded, tied BF16 model (byte counts per rank), trains on data.text batches that differ
// by rank, and exports a consolidated model that the independent validator accepts and that a new
// launch loads back to the same slices and losses.
import assert from "node:assert/strict";
import {execFileSync} from "node:child_process";
import {mkdtempSync, readdirSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";

import {llama, llamaTensorShapes} from "@mixz/engine";

import {writeHfModel} from "../../packages/engine/test/helpers/hfModel.js";
import {fixture, repoRoot, runMixz} from "../helpers/mixzProcess.js";

const script = fixture("integration/fixtures/pretrained.ts");
const validator = join(repoRoot, "packages/engine/test/helpers/validate_safetensors.py");
const scratch = mkdtempSync(join(tmpdir(), "mixz-pretrained-it-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

const configFile = join(scratch, "config.json.ds");
const textFile = join(scratch, "text.txt");
const exported = join(scratch, "exported");
const tiny = {vocabSize: 256, hidden: 24, layers: 2, heads: 4, kvHeads: 2, intermediate: 40, maxSeqLen: 16};

interface Run {
    readonly output: string;
    line(kind: string, rank: number): Map<string, string>[];
}

async function launch(args: readonly string[]): Promise<Run> {
    const run = await runMixz(["launch", "--nproc", "2", "--master-port", "0", "--config", configFile, script, ...args], {timeoutMs: 60_000});
    const output = run.stdout + run.stderr;
    assert.equal(run.code, 0, output);
    return {
        output,
        line: (kind, rank) =>
            [...output.matchAll(new RegExp(`^(?:\\[[^\\]]*\\] )?${kind} rank=${rank} (.*)$`, "gm"))].map((m) => new Map(m[1]!.split(" ").map((kv) => kv.split("=", 2) as [string, string])))
    };
}

let first: Run;
before(async () => {
    writeFileSync(configFile, JSON.stringify({
        train_micro_batch_size_per_gpu: 2,
        gradient_accumulation_steps: 1,
        optimizer: {type: "AdamW", params: {lr: 0.01}},
        zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0}
    }));
    writeFileSync(textFile, Array.from({length: 60}, (_, i) => `Sentence ${i} of a text that never repeats itself. `).join(""));
    const hf = await writeHfModel(join(scratch, "hf"), {config: tiny, dtype: "BF16", shards: 2, tied: true});
    first = await launch(["--model", hf.dir, "--text", textFile, "--steps", "2", "--export", exported]);
});

describe("fromPretrained across 2 launched ranks", () => {
    it("each rank reads only its own slices: tensor bytes = its slices, the two ranks' reads sum to the model once", () => {
        const reads = [0, 1].map((rank) => first.line("read", rank)[0]!);
        let total = 0;
        for (const read of reads) {
            assert.equal(read.get("tensorBytes"), read.get("own"), first.output);
            assert.ok(Number(read.get("bytes")) - Number(read.get("tensorBytes")) < 4096, "beyond slices only headers");
            total += Number(read.get("tensorBytes"));
        }
        // embed (+ the tied head read from it) + 2 × 9 layer tensors + norm, BF16.
        const h = 24, v = 256, kv = 12, i = 40;
        const perLayer = 2 * h * h + 2 * kv * h + 3 * i * h + 2 * h;
        assert.equal(total, 2 * (2 * v * h + 2 * perLayer + h));
        assert.ok(Number(reads[0]!.get("tensorBytes")) < total * 0.6);
    });

    it("data.text gives the ranks different batches", () => {
        const a = first.line("data", 0).map((m) => m.get("first"));
        const b = first.line("data", 1).map((m) => m.get("first"));
        assert.equal(a.length, 2);
        assert.equal(b.length, 2);
        for (const x of a) assert.ok(!b.includes(x));
    });

    it("the export validates, and loading it in a new launch gives the same slices and losses", async () => {
        assert.deepEqual(readdirSync(exported).sort(), ["config.json", "model.safetensors"]);
        // Exactly the model's tensors, F32 (the engine's dtype), the LM head stored.
        const expect = llamaTensorShapes(llama(tiny).config).flatMap(({name, shape}) => ["--expect", `${name}=F32:${shape.join(",")}`]);
        assert.equal(expect.length, 2 * (1 + 2 * 9 + 1 + 1));
        assert.match(execFileSync("python3", [validator, join(exported, "model.safetensors"), ...expect], {encoding: "utf8"}), /^OK /);
        const second = await launch(["--model", exported]);
        for (const rank of [0, 1]) {
            assert.equal(second.line("hash", rank)[0]!.get("sha"), first.line("hash", rank)[0]!.get("sha"), `rank ${rank} slices`);
            assert.deepEqual(second.line("eval", rank), first.line("eval", rank));
            assert.equal(second.line("read", rank)[0]!.get("tensorBytes"), second.line("read", rank)[0]!.get("own"));
        }
    });
});

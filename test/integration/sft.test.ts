// The SFT example end to end through the launcher (packages/examples/src/sftPrepare.ts, then
// sft.ts on 2 nodes × 2 ranks with MixZ++): a model directory with a real tokenizer and chat
// template, JSONL chats with the loss on the answers only, training that lowers the loss, a greedy
// answer before and after, and a PEFT adapter on disk.
import assert from "node:assert/strict";
import {existsSync, mkdtempSync, readFileSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";

import {repoRoot, runMixz} from "../helpers/mixzProcess.js";

const scratch = mkdtempSync(join(tmpdir(), "mixz-sft-"));
after(() => rmSync(scratch, {recursive: true, force: true}));
const example = (name: string): string => join(repoRoot, "packages/examples/src", name);

describe("SFT example (sftPrepare.ts + sft.ts)", () => {
    it("prepares a model and chats, fine-tunes LoRA on the answers, and saves a PEFT adapter", async () => {
        const prepare = await runMixz(["launch", "--nproc", "1", "--master-port", "0", "--config", join(repoRoot, "configs/zero3.json"), example("sftPrepare.ts"),
            "--out", scratch, "--pretrain-steps", "40"], {timeoutMs: 180_000});
        assert.equal(prepare.code, 0, prepare.stdout + prepare.stderr);
        for (const file of ["model/config.json", "model/model.safetensors", "model/tokenizer.json", "model/tokenizer_config.json", "train.jsonl", "eval.jsonl"]) {
            assert.ok(existsSync(join(scratch, file)), file);
        }
        assert.ok(readFileSync(join(scratch, "train.jsonl"), "utf8").split("\n").filter(Boolean).length >= 20, "enough chats from the Python standard library");

        const sft = await runMixz(["launch", "--hostfile", join(repoRoot, "configs/hostfile.local"), "--master-port", "0", "--config", join(repoRoot, "configs/mixzpp-local.json"),
            example("sft.ts"), "--model", join(scratch, "model"), "--data", join(scratch, "train.jsonl"), "--eval", join(scratch, "eval.jsonl"),
            "--steps", "30", "--log-every", "10", "--out", scratch], {timeoutMs: 240_000});
        assert.equal(sft.code, 0, sft.stdout + sft.stderr);
        assert.match(sft.stdout, /4 ranks, hpZ groups of 2, frozen weights int8/);
        const losses = [...sft.stdout.matchAll(/sft step +\d+\/30 +loss (\S+)/g)].map((m) => Number(m[1]));
        assert.equal(losses.length, 3, sft.stdout);
        assert.ok(losses.every(Number.isFinite) && losses[2]! < losses[0]!, `the training loss falls: ${losses}`);
        const before = Number(/held-out loss before: (\S+)/.exec(sft.stdout)?.[1]);
        const afterLoss = Number(/held-out loss after 30 steps: (\S+)/.exec(sft.stdout)?.[1]);
        assert.ok(afterLoss < before, `held-out loss ${before} → ${afterLoss}`);
        assert.match(sft.stdout, /answer before: "What does the Python module \S+ do\?" → /);
        assert.match(sft.stdout, /answer after: "What does the Python module \S+ do\?" → /);
        for (const file of ["adapter/adapter_config.json", "adapter/adapter_model.safetensors"]) assert.ok(existsSync(join(scratch, file)), file);
    });
});

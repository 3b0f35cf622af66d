import assert from "node:assert/strict";
import {mkdtempSync, readFileSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {describe, it} from "node:test";
import {JobConsole, kStderrTailLines} from "../src/JobConsole.js";

function sink(interactive = false): {out: string[]; err: string[]; sink: {out: (t: string) => void; err: (t: string) => void; interactive: boolean}} {
    const out: string[] = [];
    const err: string[] = [];
    return {out, err, sink: {out: (t) => out.push(t), err: (t) => err.push(t), interactive}};
}

describe("JobConsole", () => {
    it("prefixes lines with [host:rank] on the right stream; filters the console only", () => {
        const dir = mkdtempSync(join(tmpdir(), "mixz-console-"));
        try {
            const s = sink();
            const console = new JobConsole({sink: s.sink, logDir: dir, consoleRanks: new Set([1])});
            console.rankLine(0, "a", "stdout", "hidden");
            console.rankLine(1, "b", "stderr", "shown");
            console.close();
            assert.deepEqual(s.err, ["[b:1] shown\n"]);
            assert.deepEqual(s.out, []);
            assert.equal(readFileSync(join(dir, "rank-0.log"), "utf8"), "hidden\n");
        } finally {
            rmSync(dir, {recursive: true, force: true});
        }
    });
    it("keeps the last stderr lines of each rank", () => {
        const console = new JobConsole({sink: sink().sink});
        for (let i = 0; i < kStderrTailLines + 5; i++) console.rankLine(2, "h", "stderr", `line ${i}`);
        console.rankLine(2, "h", "stdout", "not stderr");
        assert.equal(console.stderrTail(2).length, kStderrTailLines);
        assert.equal(console.stderrTail(2).at(-1), `line ${kStderrTailLines + 4}`);
        assert.deepEqual(console.stderrTail(7), []);
    });
    it("a progress line once every reporting rank has reported a step", () => {
        const s = sink();
        const console = new JobConsole({sink: s.sink});
        console.metrics(0, {step: 1, loss: 2, tokensPerSec: 100, stepTimeMs: 10});
        assert.deepEqual(s.out, ["[mixz] step 1 | loss 2.0000 | 100 tokens/s | slowest rank 0 (10 ms)\n"], "only rank 0 reports so far");
        console.metrics(1, {step: 2, loss: 3, tokensPerSec: 50, stepTimeMs: 30});
        console.metrics(0, {step: 2, loss: 1, tokensPerSec: 100, stepTimeMs: 10});
        assert.equal(s.out[1], "[mixz] step 2 | loss 2.0000 | 150 tokens/s | slowest rank 1 (30 ms)\n");
        console.metrics(0, {step: 2, loss: 9});
        assert.equal(s.out.length, 2, "an old step is not printed again");
    });
    it("a second engine in the same script (steps from 1 again) gets its own progress lines", () => {
        const s = sink();
        const console = new JobConsole({sink: s.sink});
        for (const step of [1, 2, 3]) for (const rank of [0, 1]) console.metrics(rank, {step, loss: 1});
        assert.equal(s.out.length, 3);
        console.metrics(0, {step: 1, loss: 5});
        assert.equal(s.out.length, 3, "rank 1 has not reported the new engine's step 1 yet");
        console.metrics(1, {step: 3, loss: 9});
        assert.equal(s.out.length, 3, "a repeated report of the old engine is not shown");
        console.metrics(1, {step: 1, loss: 7});
        assert.equal(s.out.at(-1), "[mixz] step 1 | loss 6.0000\n");
        console.metrics(0, {step: 2, loss: 1});
        console.metrics(1, {step: 2, loss: 1});
        assert.equal(s.out.at(-1), "[mixz] step 2 | loss 1.0000\n");
    });
    it("the progress line sums the bytes every rank received from its own node and from other nodes", () => {
        const s = sink();
        const console = new JobConsole({sink: s.sink});
        console.metrics(0, {step: 1, loss: 1});
        console.metrics(1, {step: 1, loss: 1});
        console.metrics(0, {step: 2, loss: 1, intraNodeBytes: 1_500_000, crossNodeBytes: 0});
        console.metrics(1, {step: 2, loss: 1, intraNodeBytes: 2_000_000, crossNodeBytes: 250_000});
        assert.equal(s.out.at(-1), "[mixz] step 2 | loss 1.0000 | received 3.5 MB intra-node, 0.3 MB cross-node\n");
    });
    it("without a terminal, printEvery (steps_per_print) keeps step 1 and every n-th step", () => {
        const s = sink();
        const console = new JobConsole({sink: s.sink, printEvery: 10});
        for (let step = 1; step <= 25; step++) console.metrics(0, {step, loss: 1});
        assert.deepEqual(s.out.map((line) => /step (\d+)/.exec(line)![1]), ["1", "10", "20"]);
    });
    it("an interactive terminal keeps the progress line last", () => {
        const s = sink(true);
        const console = new JobConsole({sink: s.sink});
        console.metrics(0, {step: 1, loss: 1});
        console.rankLine(0, "h", "stdout", "hello");
        console.close();
        assert.deepEqual(s.out, ["\r\x1b[K[mixz] step 1 | loss 1.0000", "\r\x1b[K", "[h:0] hello\n", "[mixz] step 1 | loss 1.0000", "\n"]);
    });
});

// The installed command end to end: bin/mixz → built dist → exit codes and streams of a real process.
import assert from "node:assert/strict";
import {spawnSync} from "node:child_process";
import {existsSync, mkdtempSync, readdirSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {describe, it} from "node:test";
import {fileURLToPath} from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));
const bin = join(root, "bin", "mixz");

function mixz(...argv: string[]): {status: number | null; stdout: string; stderr: string} {
    const result = spawnSync(bin, argv, {cwd: root, encoding: "utf8", timeout: 60_000});
    return {status: result.status, stdout: result.stdout, stderr: result.stderr};
}

describe("bin/mixz", () => {
    it("the issue's dry run prints the plan as JSON and exits 0", () => {
        const run = mixz("launch", "--hostfile", "configs/hostfile.example", "--dry-run", "--json", "--config", "configs/mixzpp.json", "x.ts");
        assert.equal(run.status, 0, run.stderr);
        assert.equal(JSON.parse(run.stdout).world_size, 16);
        assert.equal(run.stderr, "");
    });
    it("accepts every config in configs/ (every *.json but the schema itself)", () => {
        const names = readdirSync(join(root, "configs")).filter((name) => name.endsWith(".json") && name !== "ds_config.schema.json");
        assert.ok(names.length >= 4, names.join(", "));
        for (const name of names) {
            const run = mixz("config", "check", `configs/${name}`);
            assert.equal(run.status, 0, `${name}: ${run.stderr}`);
        }
    });
    it("a user mistake exits 2 with one line and no stack trace", () => {
        const run = mixz("launch", "--hostfile", "no-such-hostfile", "--dry-run", "t.ts");
        assert.equal(run.status, 2);
        assert.equal(run.stdout, "");
        assert.equal(run.stderr, "mixz: no-such-hostfile: --hostfile: cannot read hostfile: no such file\n");
    });
    it("the main job command (shortened) trains on its 4 ranks on 2 nodes, saves the adapter and exits 0", () => {
        const out = mkdtempSync(join(tmpdir(), "mixz-demo-"));
        try {
            const run = mixz("launch", "--hostfile", "configs/hostfile.local", "--master-port", "0", "--config", "configs/mixzpp-local.json", "packages/examples/src/mixzppDemo.ts",
                "--pretrain-steps", "3", "--lora-steps", "2", "--no-samples", "--out", out);
            assert.equal(run.status, 0, run.stdout + run.stderr);
            assert.match(run.stdout, /^\[127\.0\.0\.1:0\] world: 4 ranks on 2 nodes; ZeRO stage 3, hpZ groups of 2, frozen weights int8: true, bf16 model/m);
            assert.match(run.stdout, /quantizeNontrainableParams\(\): \d+ frozen parameters are int8 now/);
            assert.ok(existsSync(join(out, "adapter", "adapter_model.safetensors")) && existsSync(join(out, "base", "model.safetensors")), run.stdout);
            // Only rank 0 prints (the launcher's own lines aside).
            assert.deepEqual(run.stdout.split("\n").filter((line) => /^\[[^\]]+:[123]\]/.test(line)), []);
        } finally {
            rmSync(out, {recursive: true, force: true});
        }
    });
});

describe("bin/mixz bench", () => {
    it("allgather --nproc 2 --quant int8 --json: checked rows with wire bytes below the unquantized size", () => {
        const run = mixz("bench", "allgather", "--nproc", "2", "--quant", "int8", "--dtype", "fp16", "-b", "64K", "-e", "1M", "-f", "4", "-n", "3", "--json");
        assert.equal(run.status, 0, run.stderr);
        const report = JSON.parse(run.stdout) as {collective: string; ranks: number; dtype: string; quant: string; avg_busbw: number; rows: Array<{size: number; count: number; wire_bytes: number; wrong: number; busbw: number}>};
        assert.deepEqual([report.collective, report.ranks, report.dtype, report.quant], ["allgather", 2, "fp16", "int8"]);
        assert.deepEqual(report.rows.map((r) => r.size), [65536, 262144, 1048576]);
        for (const row of report.rows) {
            assert.equal(row.wrong, 0);
            assert.ok(row.wire_bytes < row.count * 2, "int8 codes and scales are smaller than fp16 data");
            assert.ok(row.busbw > 0);
        }
    });
    it("reducescatter over Gloo, fp32, checked", () => {
        const run = mixz("bench", "reducescatter", "--nproc", "2", "--transport", "gloo", "-b", "1M", "-e", "1M", "-n", "2", "--json");
        assert.equal(run.status, 0, run.stderr);
        const report = JSON.parse(run.stdout) as {rows: Array<{wrong: number; count: number}>};
        assert.equal(report.rows[0]!.wrong, 0);
        assert.equal(report.rows[0]!.count, 131072);
    });
});

import assert from "node:assert/strict";
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";
import {fileURLToPath} from "node:url";
import {runCli} from "@mixz/cli";

const root = fileURLToPath(new URL("../../..", import.meta.url));
const configs = join(root, "configs");
const scratch = mkdtempSync(join(tmpdir(), "mixz-cli-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

interface Run {
    readonly code: number;
    readonly out: string;
    readonly err: string;
}

async function mixz(...argv: string[]): Promise<Run> {
    let out = "";
    let err = "";
    const code = await runCli(argv, {out: (text) => (out += text), err: (text) => (err += text)});
    return {code, out, err};
}

function file(name: string, text: string): string {
    const path = join(scratch, name);
    writeFileSync(path, text);
    return path;
}

/** A user mistake: exit 2, every stderr line a `mixz: …` diagnostic, never a stack trace. */
function assertUserError(run: Run, pattern: RegExp): void {
    assert.equal(run.code, 2, `exit code; stderr: ${run.err}`);
    assert.match(run.err, pattern);
    for (const line of run.err.trimEnd().split("\n")) assert.match(line, /^mixz: /);
    assert.doesNotMatch(run.err, /\n\s+at /, "no stack trace");
}

describe("mixz launch --dry-run", () => {
    it("prints the plan of the issue's example as the §4 JSON object", async () => {
        const run = await mixz("launch", "--hostfile", join(configs, "hostfile.example"), "--dry-run", "--json",
            "--config", join(configs, "mixzpp.json"), "x.ts");
        assert.equal(run.code, 0, run.err);
        const plan = JSON.parse(run.out) as Record<string, unknown>;
        assert.deepEqual(Object.keys(plan), ["world_size", "master_addr", "master_port", "nodes"]);
        assert.equal(plan["world_size"], 16);
        assert.equal(plan["master_port"], 29500);
        const nodes = plan["nodes"] as Array<Record<string, unknown>>;
        assert.deepEqual(nodes.map((n) => [n["host"], n["node_rank"], n["spawn"]]), [["worker-0", 0, "ssh"], ["worker-1", 1, "ssh"]]);
        assert.deepEqual(nodes[1]!["ranks"], [8, 9, 10, 11, 12, 13, 14, 15]);
        assert.deepEqual(nodes[1]!["local_ranks"], [0, 1, 2, 3, 4, 5, 6, 7]);
    });
    it("prints a readable table without --json", async () => {
        const run = await mixz("launch", "--nproc", "3", "--dry-run", "train.ts", "--lr", "1");
        assert.equal(run.code, 0, run.err);
        assert.match(run.out, /^world size 3 on 1 node; coordinator 127\.0\.0\.1:29500\n/);
        assert.match(run.out, /0 +localhost +local +0-2 +0-2 +0-2/);
    });
    it("accepts DeepSpeed's underscore spellings and torchrun's dashes", async () => {
        const hosts = join(configs, "hostfile.example");
        const a = await mixz("launch", "-H", hosts, "--num_nodes", "1", "--num_gpus", "2", "--master_port", "0", "--dry-run", "--json", "t.ts");
        const b = await mixz("launch", "-H", hosts, "--num-nodes", "1", "--num-gpus", "2", "--master-port", "0", "--dry-run", "--json", "t.ts");
        assert.equal(a.code, 0, a.err);
        assert.equal(a.out, b.out);
        assert.deepEqual(JSON.parse(a.out).nodes[0].slots, [0, 1]);
        assert.equal(JSON.parse(a.out).master_port, 0);
    });
    it("options after the script belong to the script", async () => {
        const run = await mixz("launch", "--nproc", "1", "--dry-run", "train.ts", "--nproc", "bogus", "--include", "x");
        assert.equal(run.code, 0, run.err);
    });
    it("checks the config against the plan's world", async () => {
        const config = file("hpz3.json", JSON.stringify({
            train_micro_batch_size_per_gpu: 1,
            zero_optimization: {stage: 3, zero_hpz_partition_size: 3}
        }, null, 2));
        const run = await mixz("launch", "--nproc", "4", "--config", config, "--dry-run", "t.ts");
        assertUserError(run, /hpz3\.json:\d+:\d+: zero_optimization\.zero_hpz_partition_size: 3 does not divide world size 4/);
        assert.equal(run.out, "", "nothing printed as a plan");
    });
});

describe("mixz launch: bad input exits 2 with one line per problem", () => {
    const cases: Array<[string, string[], RegExp]> = [
        ["missing hostfile", ["-H", "/nonexistent/hosts"], /mixz: \/nonexistent\/hosts: --hostfile: cannot read hostfile: no such file/],
        ["include with exclude", ["--nproc", "2", "-i", "localhost", "-e", "localhost:0"], /--include: --include and --exclude are mutually exclusive/],
        ["non-numeric count", ["--nproc", "two"], /--nproc: 'two' is not a whole number/],
        ["count with trailing text", ["--num_gpus", "4abc"], /--num_gpus: '4abc' is not a whole number/],
        ["conflicting aliases", ["--num-gpus", "2", "--num_gpus", "3"], /--num_gpus: given twice with different values/],
        ["unknown flag", ["--nprocs", "2"], /^mixz: unknown option '--nprocs' \(Did you mean --nproc\?\)$/m],
        ["missing script", [], /missing required argument 'script'/],
        ["unknown host", ["-H", "HOSTS", "-i", "worker-9"], /Hostname 'worker-9' not found/],
        ["empty hostfile name", ["-H", ""], /--hostfile: is empty/],
        ["huge count", ["--nproc", "99999999999999999999999"], /--nproc: '99999999999999999999999' is not a whole number/]
    ];
    for (const [name, argv, pattern] of cases) {
        it(name, async () => {
            const args = argv.map((arg) => (arg === "HOSTS" ? join(configs, "hostfile.example") : arg));
            const run = await mixz("launch", ...args, "--dry-run", ...(name === "missing script" ? [] : ["t.ts"]));
            assertUserError(run, pattern);
        });
    }
    it("a bad hostfile: every bad line, with file and line", async () => {
        const hosts = file("bad-hosts", "good slots=2\nbad slots=4abc\nworker\n");
        const run = await mixz("launch", "-H", hosts, "--dry-run", "t.ts");
        assertUserError(run, /bad-hosts:2:5: slots=4abc is not a whole number/);
        assert.match(run.err, /bad-hosts:3:1: host 'worker' has no slot count/);
        assert.equal(run.err.trimEnd().split("\n").length, 2);
    });
});

describe("mixz launch flag combinations", () => {
    it("--json without --dry-run", async () => assertUserError(await mixz("launch", "--nproc", "1", "--json", "t.ts"), /--json: only applies to --dry-run/));
    it("an empty script name", async () => assertUserError(await mixz("launch", "--nproc", "1", "--dry-run", ""), /<script>: is empty/));
});

describe("mixz config check", () => {
    it("accepts every shipped config", async () => {
        for (const name of ["zero3.json", "zeropp.json", "mixzpp.json", "mixzpp-local.json"]) {
            const run = await mixz("config", "check", join(configs, name));
            assert.equal(run.code, 0, `${name}: ${run.err}`);
            const resolved = JSON.parse(run.out) as {zero_optimization: {stage: number}};
            assert.equal(resolved.zero_optimization.stage, 3);
        }
    });
    it("fills in defaults and the world-dependent values", async () => {
        const run = await mixz("config", "check", join(configs, "mixzpp.json"), "--world-size", "16", "--gpus-per-node", "8");
        assert.equal(run.code, 0, run.err);
        const resolved = JSON.parse(run.out) as Record<string, unknown>;
        assert.equal(resolved["train_batch_size"], 64);
        assert.equal((resolved["fp16"] as Record<string, unknown>)["initial_scale_power"], 16);
        assert.equal((resolved["zero_optimization"] as Record<string, unknown>)["reduce_bucket_size"], 5e8);
    });
    it("--json reports success as one object", async () => {
        const run = await mixz("config", "check", join(configs, "zero3.json"), "--json");
        assert.equal(run.code, 0);
        const report = JSON.parse(run.out) as {ok: boolean; config: unknown};
        assert.equal(report.ok, true);
        assert.ok(report.config);
    });
    it("the DESIGN.md §4 message for hpZ", async () => {
        const config = file("hpz.json", '{\n  "train_micro_batch_size_per_gpu": 1,\n  "zero_optimization": {\n    "stage": 3,\n    "zero_hpz_partition_size": 3\n  }\n}\n');
        const run = await mixz("config", "check", config, "--world-size", "8");
        assertUserError(run, /^mixz: .*hpz\.json:5:32: zero_optimization\.zero_hpz_partition_size: 3 does not divide world size 8$/m);
    });
    it("every problem of a file, one line each; --json lists them on stdout", async () => {
        const config = file("many.json", JSON.stringify({
            train_batch_size: 30,
            train_micro_batch_size_per_gpu: 4,
            fp16: {enabled: true},
            bf16: {enabled: true},
            zero_optimization: {stage: 3, stage3_prefetch_bucketsize: 1}
        }, null, 2));
        const run = await mixz("config", "check", config, "--world-size", "8");
        assert.equal(run.code, 2);
        assert.ok(run.err.trimEnd().split("\n").length >= 2, run.err);
        assert.match(run.err, /did you mean "stage3_prefetch_bucket_size"\?/);
        const json = await mixz("config", "check", config, "--world-size", "8", "--json");
        assert.equal(json.code, 2);
        assert.equal(json.err, "");
        const report = JSON.parse(json.out) as {ok: boolean; problems: Array<{code: string; path: string; line: number}>};
        assert.equal(report.ok, false);
        assert.ok(report.problems.every((p) => typeof p.code === "string" && p.code.startsWith("MIXZ_ERR_")));
    });
    const bad: Array<[string, string, RegExp]> = [
        ["malformed JSON with line and column", '{\n  "train_batch_size": 8,\n}\n', /bad\.json:2:24: unexpected ',' \(trailing commas are not allowed in JSON\)/],
        ["duplicate key", '{"train_batch_size": 8,\n "train_batch_size": 16}', /bad\.json:2:2: .*duplicate key "train_batch_size"/],
        ["wrong type", '{"train_batch_size": "eight"}', /train_batch_size: /]
    ];
    for (const [name, text, pattern] of bad) {
        it(name, async () => assertUserError(await mixz("config", "check", file("bad.json", text)), pattern));
    }
    it("a missing file", async () => assertUserError(await mixz("config", "check", "/nonexistent.json"), /nonexistent\.json/));
    it("bad flag values", async () => assertUserError(await mixz("config", "check", join(configs, "zero3.json"), "--world-size", "0"), /--world-size: 0 is not a whole number ≥ 1/));
    it("bad flag values with --json still give one JSON object on stdout", async () => {
        const run = await mixz("config", "check", join(configs, "zero3.json"), "--world-size", "0", "--json");
        assert.equal(run.code, 2);
        assert.equal(run.err, "");
        const report = JSON.parse(run.out) as {ok: boolean; problems: Array<{code: string; path: string}>};
        assert.equal(report.ok, false);
        assert.deepEqual(report.problems.map((p) => [p.code, p.path]), [["MIXZ_ERR_USAGE", "--world-size"]]);
    });
});

describe("mixz itself", () => {
    it("--version prints the version and exits 0", async () => {
        const run = await mixz("--version");
        assert.equal(run.code, 0);
        assert.match(run.out, /^\d+\.\d+\.\d+\n$/);
    });
    it("--help exits 0 and lists the commands", async () => {
        const run = await mixz("--help");
        assert.equal(run.code, 0);
        assert.match(run.out, /launch/);
        assert.match(run.out, /config/);
    });
    it("an unknown command exits 2", async () => {
        assertUserError(await mixz("lanuch"), /unknown command 'lanuch'.*\n?.*launch/);
    });
});

describe("mixz bench", () => {
    it("quantize: one row per size with GB/s columns, --json and --plot", async () => {
        const plot = join(scratch, "q.svg");
        const run = await mixz("bench", "quantize", "-b", "64K", "-e", "256K", "-f", "2", "-n", "2", "--dtype", "bf16", "--quant", "int4", "--json", "--plot", plot);
        assert.equal(run.code, 0, run.err);
        const report = JSON.parse(run.out) as {benchmark: string; rows: Array<{size: number; count: number; quantize_gbps: number; memcpy_gbps: number}>};
        assert.equal(report.benchmark, "quantize");
        assert.deepEqual(report.rows.map((r) => [r.size, r.count]), [[65536, 32768], [131072, 65536], [262144, 131072]]);
        assert.ok(report.rows.every((r) => r.quantize_gbps > 0 && r.memcpy_gbps > 0));
        assert.match(readFileSync(plot, "utf8"), /^<svg [\s\S]*throughput \(GB\/s\)[\s\S]*<\/svg>\n$/);
    });
    const bad: Array<[string[], RegExp]> = [
        [["quantise"], /<what>: 'quantise' is not one of allgather, reducescatter, quantize/],
        [["quantize", "--quant", "none"], /--quant: mixz bench quantize needs --quant int8 or int4/],
        [["quantize", "--dtype", "fp8", "--quant", "int8"], /--dtype: 'fp8' is not one of fp32, fp16, bf16/],
        [["quantize", "-b", "8M", "-e", "1M", "--quant", "int8"], /invalid sizes for 'minbytes' and 'maxbytes'/],
        [["quantize", "-b", "1.5M", "--quant", "int8"], /-b: invalid size '1\.5M'/]
    ];
    for (const [args, pattern] of bad) it(`refuses ${args.join(" ")}`, async () => assertUserError(await mixz("bench", ...args), pattern));
});

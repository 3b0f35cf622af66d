// The engine-support rules: every config that ZeroEngine.create (and so initialize()) refuses is
// refused by `mixz config check` and by `mixz launch --dry-run` before anything starts, with the
// same message, case by case.
import assert from "node:assert/strict";
import {mkdtempSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";
import {runCli} from "@mixz/cli";
import {resolveConfigObject} from "@mixz/config";
import {llama, ZeroEngine} from "@mixz/engine";
import {InputError} from "@mixz/protocol";
import {inProcessWorld} from "../../engine/test/helpers/inProcessWorld.js";

const scratch = mkdtempSync(join(tmpdir(), "mixz-engine-support-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

const base = {
    train_micro_batch_size_per_gpu: 1,
    gradient_accumulation_steps: 1,
    optimizer: {type: "AdamW", params: {lr: 1e-3}},
    zero_optimization: {stage: 3}
};

const cases: readonly {readonly name: string; readonly config: Record<string, unknown>; readonly path: string; readonly message: RegExp}[] = [
    {name: "stage 0", config: {...base, zero_optimization: {stage: 0}}, path: "zero_optimization.stage", message: /trains with ZeRO stage 3; got stage 0/},
    {name: "stage 1", config: {...base, zero_optimization: {stage: 1}}, path: "zero_optimization.stage", message: /got stage 1 \(set it to 3\)/},
    {name: "stage 2", config: {...base, zero_optimization: {stage: 2}}, path: "zero_optimization.stage", message: /got stage 2 \(set it to 3\)/},
    {name: "offload_param cpu", config: {...base, zero_optimization: {stage: 3, offload_param: {device: "cpu"}}}, path: "zero_optimization.offload_param.device", message: /offloading is not supported .*parameters/},
    {name: "offload_optimizer nvme", config: {...base, zero_optimization: {stage: 3, offload_optimizer: {device: "nvme", nvme_path: "/tmp"}}}, path: "zero_optimization.offload_optimizer.device", message: /offloading is not supported .*optimizer states/}
];

async function mixz(...argv: string[]): Promise<{code: number; out: string; err: string}> {
    let out = "";
    let err = "";
    const code = await runCli(argv, {out: (text) => (out += text), err: (text) => (err += text)});
    return {code, out, err};
}

/** What ZeroEngine.create (initialize's engine) says of the config, as "path: message" lines. */
async function engineRefusal(config: Record<string, unknown>): Promise<string> {
    const resolved = resolveConfigObject(config, {worldSize: 1}).config;
    const [world] = await inProcessWorld(1, {jobId: `support-${process.pid}-${Math.random().toString(16).slice(2)}`});
    try {
        await ZeroEngine.create({model: llama({vocabSize: 16, hidden: 8, layers: 1, heads: 2, intermediate: 16, maxSeqLen: 8}), config: resolved, communicator: world!});
    } catch (error) {
        assert.ok(error instanceof InputError, `an InputError, got ${String(error)}`);
        return error.problems.map((p) => `${p.path}: ${p.message}`).join("\n");
    } finally {
        await world!.dispose();
    }
    assert.fail("ZeroEngine.create accepted the config");
}

describe("engine-support rules: config check, launch --dry-run and the engine refuse alike", () => {
    for (const c of cases) {
        it(c.name, async () => {
            const file = join(scratch, `${c.name.replace(/\W+/g, "-")}.json`);
            writeFileSync(file, `${JSON.stringify(c.config, null, 2)}\n`);
            const engine = await engineRefusal(c.config);
            assert.match(engine, c.message);
            const line = engine.split("\n").find((l) => l.startsWith(`${c.path}: `));
            assert.ok(line !== undefined, `the engine names ${c.path}: ${engine}`);

            const check = await mixz("config", "check", file);
            assert.equal(check.code, 2, check.err);
            assert.ok(check.err.includes(line), `config check says what the engine says (${line}): ${check.err}`);
            assert.match(check.err, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:\\d+:\\d+`), "with the file position");
            assert.doesNotMatch(check.err, /\n\s+at /, "no stack trace");

            const json = await mixz("config", "check", file, "--json");
            assert.equal(json.code, 2);
            const report = JSON.parse(json.out) as {ok: boolean; problems: {path: string; message: string}[]};
            assert.equal(report.ok, false);
            assert.ok(report.problems.some((p) => `${p.path}: ${p.message}` === line), json.out);

            const launch = await mixz("launch", "--nproc", "1", "--config", file, "--dry-run", "--json", "train.ts");
            assert.equal(launch.code, 2, launch.err);
            assert.ok(`${launch.out}${launch.err}`.includes(c.path), `launch --dry-run names ${c.path}: ${launch.out}${launch.err}`);
            assert.ok(`${launch.out}${launch.err}`.includes(line.slice(c.path.length + 2)), "with the engine's message");
        });
    }

    it("a config the engine runs passes all three (and offload \"none\" is not an offload)", async () => {
        const config = {...base, zero_optimization: {stage: 3, offload_param: {device: "none"}}};
        const file = join(scratch, "fine.json");
        writeFileSync(file, JSON.stringify(config));
        assert.equal((await mixz("config", "check", file)).code, 0);
        assert.equal((await mixz("launch", "--nproc", "1", "--config", file, "--dry-run", "--json", "train.ts")).code, 0);
        const resolved = resolveConfigObject(config, {worldSize: 1}).config;
        const [world] = await inProcessWorld(1, {jobId: `support-ok-${process.pid}`});
        const engine = await ZeroEngine.create({model: llama({vocabSize: 16, hidden: 8, layers: 1, heads: 2, intermediate: 16, maxSeqLen: 8}), config: resolved, communicator: world!});
        await engine.dispose();
    });

    it("without the engine context the config layer keeps DeepSpeed's view (a stage-2 config is valid DeepSpeed)", () => {
        const result = resolveConfigObject({...base, zero_optimization: {stage: 2, offload_optimizer: {device: "cpu"}}}, {worldSize: 2});
        assert.equal(result.config.zero_optimization.stage, 2);
        assert.ok(result.warnings.some((w) => /does not offload yet/.test(w.message)), "the offload device is a warning there");
        assert.throws(() => resolveConfigObject({...base, zero_optimization: {stage: 2}}, {worldSize: 2, engine: true}), (error: unknown) =>
            error instanceof InputError && error.problems.some((p) => p.path === "zero_optimization.stage"));
    });
});

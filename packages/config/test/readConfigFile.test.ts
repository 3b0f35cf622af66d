import assert from "node:assert/strict";
import {chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import {ErrorCodes, InputError, formatProblem} from "@mixz/protocol";
import {readConfigFile} from "@mixz/config";
import {problemOf, problemsOf} from "./helpers.js";

describe("readConfigFile", () => {
    let dir = "";
    before(() => {
        dir = mkdtempSync(join(tmpdir(), "mixz-config-"));
    });
    after(() => {
        rmSync(dir, {recursive: true, force: true});
    });
    const write = (name: string, content: string | Uint8Array): string => {
        const path = join(dir, name);
        writeFileSync(path, content);
        return path;
    };

    it("reads and resolves a config", () => {
        const path = write("ok.json", '{"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 3}}');
        const {config} = readConfigFile(path, {worldSize: 4});
        assert.equal(config.train_batch_size, 8);
        assert.equal(config.zero_optimization.overlap_comm, true);
    });

    it("reports a missing file with code fileRead and the reason", () => {
        const path = join(dir, "missing.json");
        const problem = problemOf(() => readConfigFile(path));
        assert.equal(problem.code, ErrorCodes.fileRead);
        assert.equal(problem.file, path);
        assert.equal(problem.message, "cannot read the config file: no such file or directory (ENOENT)");
    });

    it("reports a directory with code fileRead", () => {
        const sub = join(dir, "a-directory");
        mkdirSync(sub);
        const problem = problemOf(() => readConfigFile(sub));
        assert.equal(problem.code, ErrorCodes.fileRead);
        assert.equal(problem.message, "cannot read the config file: it is a directory (EISDIR)");
    });

    it("reports an unreadable file with code fileRead", (t) => {
        if (process.getuid?.() === 0) {
            t.skip("root reads every file");
            return;
        }
        const path = write("secret.json", "{}");
        chmodSync(path, 0o000);
        const problem = problemOf(() => readConfigFile(path));
        assert.equal(problem.code, ErrorCodes.fileRead);
        assert.match(problem.message, /permission denied \(EACCES\)/);
    });

    it("is a user error (exit 2), never a stack trace", () => {
        try {
            readConfigFile(join(dir, "missing.json"));
            assert.fail("expected an error");
        } catch (error) {
            assert.ok(error instanceof InputError);
            assert.equal(error.category, "user");
            assert.equal(error.code, ErrorCodes.fileRead);
            assert.doesNotMatch(error.message, /\n\s+at /);
        }
    });

    it("names the file given as context.file", () => {
        const path = write("named.json", '{"train_micro_batch_size_per_gpu": 1, "stage": 3}');
        const problem = problemOf(() => readConfigFile(path, {file: "configs/ds.json"}));
        assert.equal(problem.file, "configs/ds.json");
        assert.equal(formatProblem(problem), 'configs/ds.json:1:39: stage: unknown key "stage"; did you mean "zero_optimization.stage"?');
    });

    it("names the path in syntax errors", () => {
        const path = write("broken.json", '{\n  "train_micro_batch_size_per_gpu": 1,\n}');
        const problem = problemOf(() => readConfigFile(path));
        assert.equal(problem.code, ErrorCodes.configSyntax);
        assert.equal(problem.file, path);
        assert.deepEqual([problem.line, problem.column], [2, 38]);
    });

    it("reports an empty file", () => {
        const problem = problemOf(() => readConfigFile(write("empty.json", "")));
        assert.equal(problem.code, ErrorCodes.configSyntax);
        assert.deepEqual([problem.line, problem.column], [1, 1]);
    });

    it("accepts a UTF-8 byte order mark", () => {
        const path = write("bom.json", Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"train_micro_batch_size_per_gpu": 3}')]));
        assert.equal(readConfigFile(path).config.train_micro_batch_size_per_gpu, 3);
    });

    it("rejects bytes that are not UTF-8, naming the line", () => {
        const path = write("latin1.json", Buffer.concat([Buffer.from('{\n  "$schema": "caf'), Buffer.from([0xe9]), Buffer.from('"\n}')]));
        const problem = problemOf(() => readConfigFile(path));
        assert.equal(problem.code, ErrorCodes.configSyntax);
        assert.equal(problem.line, 2);
        assert.equal(problem.message, "the file is not valid UTF-8 text");
    });

    it("reports every problem of a file at once", () => {
        const path = write(
            "many.json",
            ['{', '  "train_batch_size": 30,', '  "train_micro_batch_size_per_gpu": 4,', '  "zero_optimization": {"stage": 3, "stage3_prefetch_bucketsize": 1},', '  "optimizer": {"type": "Lamb"}', '}'].join("\n")
        );
        const problems = problemsOf(() => readConfigFile(path, {worldSize: 8}));
        assert.deepEqual(
            problems.map((p) => [p.code, p.path, p.line]),
            [
                [ErrorCodes.configConflict, "train_batch_size", 2],
                [ErrorCodes.configUnknownKey, "zero_optimization.stage3_prefetch_bucketsize", 4],
                [ErrorCodes.configInvalidValue, "optimizer.type", 5]
            ]
        );
    });
});

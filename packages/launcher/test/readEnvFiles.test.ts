import assert from "node:assert/strict";
import {mkdtempSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {describe, it} from "node:test";
import {ErrorCodes, InputError} from "@mixz/protocol";
import {forwardedEnvironment, parseEnvFile, readEnvFiles} from "../src/readEnvFiles.js";

describe("parseEnvFile", () => {
    it("KEY=VALUE lines, comments, blanks, export, quotes, '=' in values", () => {
        assert.deepEqual(parseEnvFile("# c\n\nA=1\nexport B = two words \nC=\"quoted # not a comment\"\nD='x'\nE=a=b=c\nF=\n", "f"), {
            A: "1", B: "two words", C: "quoted # not a comment", D: "x", E: "a=b=c", F: ""
        });
    });
    for (const [text, line, pattern] of [["A=1\nnope", 2, /expected KEY=VALUE, got 'nope'/], ["1A=2", 1, /'1A' is not a valid variable name/], ["A-B=1", 1, /not a valid variable name/]] as const) {
        it(`rejects ${JSON.stringify(text)} naming file and line`, () => {
            try {
                parseEnvFile(text, "/x/.mixz_env");
                assert.fail("expected an error");
            } catch (error) {
                assert.ok(error instanceof InputError);
                assert.equal(error.problems[0]!.code, ErrorCodes.usage);
                assert.equal(error.problems[0]!.file, "/x/.mixz_env");
                assert.equal(error.problems[0]!.line, line);
                assert.match(error.problems[0]!.message, pattern);
            }
        });
    }
});

describe("readEnvFiles", () => {
    it("home first, then the working directory; .mixz_env after .deepspeed_env; later wins", () => {
        const home = mkdtempSync(join(tmpdir(), "mixz-home-"));
        const cwd = mkdtempSync(join(tmpdir(), "mixz-cwd-"));
        try {
            writeFileSync(join(home, ".deepspeed_env"), "A=home-ds\nB=home-ds\nC=home-ds\n");
            writeFileSync(join(home, ".mixz_env"), "B=home-mixz\n");
            writeFileSync(join(cwd, ".deepspeed_env"), "C=cwd-ds\n");
            assert.deepEqual(readEnvFiles(cwd, home), {A: "home-ds", B: "home-mixz", C: "cwd-ds"});
            assert.deepEqual(readEnvFiles(mkdtempSync(join(tmpdir(), "mixz-empty-")), mkdtempSync(join(tmpdir(), "mixz-empty-"))), {});
        } finally {
            rmSync(home, {recursive: true, force: true});
            rmSync(cwd, {recursive: true, force: true});
        }
    });
});

describe("forwardedEnvironment", () => {
    it("DeepSpeed's prefixes and mixz's, nothing else", () => {
        assert.deepEqual(forwardedEnvironment({NCCL_DEBUG: "INFO", PYTHONPATH: "/p", UCX_TLS: "tcp", MIXZ_X: "1", OMP_NUM_THREADS: "2", PATH: "/bin", HOME: "/root", SSH_AUTH_SOCK: "/s"}), {
            NCCL_DEBUG: "INFO", PYTHONPATH: "/p", UCX_TLS: "tcp", MIXZ_X: "1", OMP_NUM_THREADS: "2"
        });
    });
});

import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {ErrorCodes, InputError} from "@mixz/protocol";
import {parseChoiceFlag, parseIntegerFlag, parseSecondsFlag, pickAlias} from "../src/parseFlags.js";

function codeOf(fn: () => unknown): {code: string; message: string; path: string | undefined} {
    try {
        fn();
    } catch (error) {
        assert.ok(error instanceof InputError);
        const problem = error.problems[0]!;
        return {code: problem.code, message: problem.message, path: problem.path};
    }
    assert.fail("expected an InputError");
}

describe("parseIntegerFlag", () => {
    for (const [text, value] of [["0", 0], ["7", 7], [" 12 ", 12], ["-3", -3], ["9007199254740991", 9007199254740991]] as const) {
        it(`'${text}' → ${value}`, () => assert.equal(parseIntegerFlag(text, "--n"), value));
    }
    for (const text of ["", " ", "4abc", "1.5", "1e3", "0x10", "+4", "9007199254740993", "99999999999999999999999", "NaN", "Infinity"]) {
        it(`'${text}' is refused`, () => {
            const problem = codeOf(() => parseIntegerFlag(text, "--nproc"));
            assert.equal(problem.code, ErrorCodes.usage);
            assert.equal(problem.path, "--nproc");
            assert.match(problem.message, /is not a whole number$/);
        });
    }
    it("a minimum", () => {
        assert.equal(parseIntegerFlag("1", "--w", 1), 1);
        assert.match(codeOf(() => parseIntegerFlag("0", "--w", 1)).message, /0 is not a whole number ≥ 1/);
    });
});

describe("pickAlias", () => {
    it("one value, the same value twice, or none", () => {
        assert.equal(pickAlias("--num_gpus", ["2", undefined]), "2");
        assert.equal(pickAlias("--num_gpus", ["2", "2"]), "2");
        assert.equal(pickAlias("--num_gpus", [undefined, undefined]), undefined);
    });
    it("different values are an error naming the flag", () => {
        assert.equal(codeOf(() => pickAlias("--num_gpus", ["2", "3"])).path, "--num_gpus");
    });
});

describe("parseSecondsFlag", () => {
    for (const [text, ms] of [["2", 2000], ["0.25", 250], [" 300 ", 300_000], ["86400", 86_400_000]] as const) {
        it(`'${text}' → ${ms} ms`, () => assert.equal(parseSecondsFlag(text, "--t"), ms));
    }
    for (const text of ["0", "-1", "1e3", "0x10", "86401", "", "two", ".5"]) {
        it(`'${text}' is refused`, () => assert.match(codeOf(() => parseSecondsFlag(text, "--timeout")).message, /is not a number of seconds in \(0, 86400\]/));
    }
});

describe("parseChoiceFlag", () => {
    it("one of the words", () => assert.equal(parseChoiceFlag("json", "--log-format", ["pretty", "json"]), "json"));
    it("anything else names the flag and the choices", () => {
        const problem = codeOf(() => parseChoiceFlag("xml", "--log-format", ["pretty", "json"]));
        assert.equal(problem.path, "--log-format");
        assert.match(problem.message, /'xml' is not one of pretty, json/);
    });
});

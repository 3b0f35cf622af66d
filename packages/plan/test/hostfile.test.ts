import assert from "node:assert/strict";
import {mkdtempSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {describe, it} from "node:test";
import {ErrorCodes, InputError} from "@mixz/protocol";
import {parseHostfile, readHostfile} from "@mixz/plan";

function problemsOf(fn: () => unknown): InputError["problems"] {
    try {
        fn();
    } catch (error) {
        assert.ok(error instanceof InputError, `expected InputError, got ${String(error)}`);
        return error.problems;
    }
    assert.fail("expected an InputError");
}

describe("parseHostfile accepts DeepSpeed's grammar", () => {
    const cases: Array<[string, string, Array<[string, number]>]> = [
        ["one host", "worker-0 slots=4", [["worker-0", 4]]],
        ["file order kept", "b slots=1\na slots=2\n", [["b", 1], ["a", 2]]],
        ["blank lines and comments", "\n# cluster\n  \nworker-0 slots=2\n\n#worker-1 slots=2\n", [["worker-0", 2]]],
        ["surrounding whitespace and tabs", "   worker-0\tslots=8   ", [["worker-0", 8]]],
        ["trailing comment", "worker-0 slots=2 # fast node", [["worker-0", 2]]],
        ["comment glued to the count", "worker-0 slots=2# fast", [["worker-0", 2]]],
        ["max_slots after slots", "worker-0 slots=2 max_slots=4", [["worker-0", 2]]],
        ["CRLF line ends", "a slots=1\r\nb slots=1\r\n", [["a", 1], ["b", 1]]],
        ["slots=0 is kept in the file (it takes no part in the plan)", "a slots=0\nb slots=1", [["a", 0], ["b", 1]]],
        ["IPv4 addresses", "127.0.0.1 slots=2\n127.0.0.2 slots=2", [["127.0.0.1", 2], ["127.0.0.2", 2]]],
        ["byte order mark", "\uFEFFa slots=3", [["a", 3]]]
    ];
    for (const [name, text, expected] of cases) {
        it(name, () => {
            const parsed = parseHostfile(text, "hosts");
            assert.deepEqual(parsed.hosts.map((h) => [h.name, h.slots]), expected);
        });
    }
    it("records line numbers and max_slots", () => {
        const parsed = parseHostfile("# c\n\nworker-0 slots=2 max_slots=4\n", "hosts");
        assert.deepEqual(parsed.hosts[0], {name: "worker-0", slots: 2, maxSlots: 4, line: 3});
    });
});

describe("parseHostfile rejects bad lines with file and line", () => {
    const cases: Array<[string, string, number, number | undefined, RegExp]> = [
        ["trailing garbage in the count", "a slots=1\nb slots=4abc", 2, 3, /slots=4abc is not a whole number/],
        ["negative count", "a slots=-1", 1, 3, /slots=-1 is not a whole number/],
        ["fractional count", "a slots=1.5", 1, 3, /not a whole number/],
        ["empty count", "a slots=", 1, 3, /slots= is not a whole number/],
        ["upper-case keyword", "a SLOTS=4", 1, 3, /must be lower-case 'slots='/],
        ["spaces around '='", "a slots = 4", 1, 3, /without spaces/],
        ["bare host name", "worker-0", 1, 1, /has no slot count: write 'worker-0 slots=N'/],
        ["slots without a host", "slots=4", 1, 1, /has no host name/],
        ["unknown trailing token", "a slots=2 gpus=8", 1, 11, /unexpected 'gpus=8' after slots=2/],
        ["max_slots below slots", "a slots=4 max_slots=2", 1, 11, /max_slots=2 is less than slots=4/],
        ["max_slots twice", "a slots=1 max_slots=2 max_slots=3", 1, 23, /unexpected 'max_slots=3'/],
        ["user@host cannot be filtered", "me@worker-0 slots=1", 1, 1, /contains ':', ',' or '@'/],
        ["absurd slot count", "a slots=100000", 1, 3, /more than 4096/],
        ["duplicate host", "a slots=1\nb slots=1\na slots=2", 3, 1, /multiple entries for a \(first at line 1\)/]
    ];
    for (const [name, text, line, column, message] of cases) {
        it(name, () => {
            const problems = problemsOf(() => parseHostfile(text, "cluster/hosts"));
            assert.equal(problems.length, 1);
            const problem = problems[0]!;
            assert.equal(problem.code, ErrorCodes.hostfileSyntax);
            assert.equal(problem.file, "cluster/hosts");
            assert.equal(problem.line, line);
            assert.equal(problem.column, column);
            assert.match(problem.message, message);
        });
    }
    it("reports every bad line at once", () => {
        const problems = problemsOf(() => parseHostfile("a slots=x\nok slots=1\nb\nc slots=1 junk", "h"));
        assert.deepEqual(problems.map((p) => p.line), [1, 3, 4]);
    });
    for (const [name, text] of [["empty file", ""], ["comments only", "# nothing\n\n   # here\n"]]) {
        it(`${name} is an error`, () => {
            const problems = problemsOf(() => parseHostfile(text!, "h"));
            assert.equal(problems[0]!.code, ErrorCodes.hostfileEmpty);
            assert.match(problems[0]!.message, /Hostfile is empty/);
        });
    }
});

describe("readHostfile", () => {
    it("a missing file is an error naming the path, never a local fallback", () => {
        const problems = problemsOf(() => readHostfile("/nonexistent/mixz/hosts"));
        assert.equal(problems[0]!.code, ErrorCodes.fileRead);
        assert.equal(problems[0]!.file, "/nonexistent/mixz/hosts");
        assert.match(problems[0]!.message, /no such file/);
    });
    it("a directory is an error", () => {
        const problems = problemsOf(() => readHostfile(tmpdir()));
        assert.match(problems[0]!.message, /is a directory/);
    });
    it("reads a real file", () => {
        const dir = mkdtempSync(join(tmpdir(), "mixz-hostfile-"));
        try {
            const path = join(dir, "hosts");
            writeFileSync(path, "n0 slots=2\nn1 slots=2\n");
            assert.equal(readHostfile(path).hosts.length, 2);
        } finally {
            rmSync(dir, {recursive: true, force: true});
        }
    });
});

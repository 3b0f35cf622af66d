import assert from "node:assert/strict";
import {spawnSync} from "node:child_process";
import {describe, it} from "node:test";
import {fileURLToPath} from "node:url";

const module = fileURLToPath(new URL("../src/readDescriptorLine.ts", import.meta.url));
const probe = `import {readDescriptorLine} from ${JSON.stringify(module)}; import {readFileSync} from "node:fs";
const line = readDescriptorLine(); process.stdout.write(JSON.stringify({line, rest: line === null ? null : readFileSync(0, "utf8")}));`;

function run(input: string): {line: string | null; rest: string | null} {
    const result = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", probe], {input, encoding: "utf8", timeout: 20_000});
    assert.equal(result.status, 0, result.stderr);
    return JSON.parse(result.stdout) as {line: string | null; rest: string | null};
}

describe("readDescriptorLine", () => {
    it("reads exactly one line and leaves the rest of stdin unread", () => {
        assert.deepEqual(run('{"a":1}\nafter\n'), {line: '{"a":1}', rest: "after\n"});
    });
    it("UTF-8 survives", () => assert.equal(run("héllo ✓\n").line, "héllo ✓"));
    it("end of input before a newline gives null", () => {
        assert.equal(run('{"partial"').line, null);
        assert.equal(run("").line, null);
    });
});

import assert from "node:assert/strict";
import {Readable} from "node:stream";
import {describe, it} from "node:test";
import {LineSplitter, splitLines} from "../src/LineSplitter.js";

function lines(chunks: Array<string | Uint8Array>): string[] {
    const out: string[] = [];
    const splitter = new LineSplitter((line) => out.push(line));
    for (const chunk of chunks) splitter.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
    splitter.end();
    return out;
}

describe("LineSplitter", () => {
    it("whole lines, and a last line without newline", () => assert.deepEqual(lines(["a\nb\nc"]), ["a", "b", "c"]));
    it("lines split across chunks at every position", () => {
        const text = "first line\nsecond\n\nfourth";
        for (let cut = 0; cut <= text.length; cut++) assert.deepEqual(lines([text.slice(0, cut), text.slice(cut)]), ["first line", "second", "", "fourth"]);
    });
    it("a UTF-8 character split across chunks", () => {
        const bytes = Buffer.from("héllo ✓\n");
        for (let cut = 0; cut <= bytes.length; cut++) assert.deepEqual(lines([bytes.subarray(0, cut), bytes.subarray(cut)]), ["héllo ✓"]);
    });
    it("CRLF endings lose the CR", () => assert.deepEqual(lines(["a\r\nb\r\n"]), ["a", "b"]));
    it("binary garbage becomes replacement characters, tabs stay", () => {
        const out = lines([Uint8Array.from([0x41, 0x00, 0x1b, 0x5b, 0x09, 0xff, 0xfe, 0x42, 0x0a])]);
        assert.deepEqual(out, ["A\ufffd\ufffd[\t\ufffd\ufffdB"]);
    });
    it("very long lines are cut into pieces", () => {
        const out = lines(["x".repeat(40_000) + "\n"]);
        assert.deepEqual(out.map((l) => l.length), [16_384, 16_384, 7232]);
    });
    it("nothing in, nothing out", () => assert.deepEqual(lines([]), []));
    it("splitLines reads a stream to its end", async () => {
        const out: string[] = [];
        await splitLines(Readable.from([Buffer.from("a\nb"), Buffer.from("c\n")]), (line) => out.push(line));
        assert.deepEqual(out, ["a", "bc"]);
    });
});

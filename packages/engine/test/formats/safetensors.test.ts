// safetensors: round trips of every dtype (empty, scalar, metadata), the byte layout the reference
// writer produces, element-range reads that touch only their bytes, every kind of corrupt file the
// reader must refuse (each cross-checked with the independent Python validator), writer argument
// errors, and atomic replacement when a write fails part-way or the rename fails.
import assert from "node:assert/strict";
import {spawnSync} from "node:child_process";
import {mkdtemp, mkdir, open, readdir, readFile, rm, truncate, writeFile} from "node:fs/promises";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, before, describe, test} from "node:test";
import {fileURLToPath} from "node:url";

import {ErrorCodes} from "@mixz/protocol";

import {readSafetensorsHeader, readTensor, safetensorsDTypes, safetensorsItemSize, writeSafetensors} from "@mixz/engine";
import type {SafetensorsArray, SafetensorsDType, SafetensorsTensor} from "@mixz/engine";

const validator = fileURLToPath(new URL("../helpers/validate_safetensors.py", import.meta.url));

let dir: string;
before(async () => {
    dir = await mkdtemp(join(tmpdir(), "mixz-safetensors-"));
});
after(async () => {
    await rm(dir, {recursive: true, force: true});
});

let fileCounter = 0;
function freshPath(label: string): string {
    fileCounter += 1;
    return join(dir, `${label}-${fileCounter}.safetensors`);
}

/** count elements of `dtype` with distinct, recognisable values (negative ones where the type allows). */
function sample(dtype: SafetensorsDType, count: number): SafetensorsArray {
    const values = Array.from({length: count}, (_, i) => i * 3 - 5);
    switch (dtype) {
        case "F64":
            return Float64Array.from(values, (v) => v / 4);
        case "F32":
            return Float32Array.from(values, (v) => v / 8);
        case "I64":
            return BigInt64Array.from(values, (v) => BigInt(v) * 10_000_000_000n);
        case "U64":
            return BigUint64Array.from(values, (v) => BigInt(v + 5) * 10_000_000_000n + 1n);
        case "I32":
            return Int32Array.from(values, (v) => v * 100_000);
        case "U32":
            return Uint32Array.from(values, (v) => (v + 5) * 100_000 + 0x8000_0000);
        case "I16":
            return Int16Array.from(values, (v) => v * 1000);
        case "U16":
        case "F16":
        case "BF16":
            return Uint16Array.from(values, (v) => (v + 5) * 0x0101 + 0x3c00);
        case "I8":
            return Int8Array.from(values, (v) => v);
        case "BOOL":
            return Uint8Array.from(values, (v) => v & 1);
        default:
            return Uint8Array.from(values, (v) => (v + 5) & 0xff);
    }
}

async function expectCode(promise: Promise<unknown>, code: string, message?: RegExp): Promise<Error> {
    const error = await promise.then(
        () => assert.fail(`expected ${code}`),
        (e: unknown) => e
    );
    assert.ok(error instanceof Error);
    assert.equal((error as Error & {code?: string}).code, code, (error as Error).message);
    if (message !== undefined) assert.match(error.message, message);
    return error;
}

function runValidator(path: string, expects: string[] = []): {status: number | null; out: string} {
    const result = spawnSync("python3", [validator, path, ...expects.flatMap((e) => ["--expect", e])], {encoding: "utf8"});
    return {status: result.status, out: (result.stdout + result.stderr).trim()};
}

/** A file from a raw header (object or text) and data bytes; `length` overrides the declared header length. */
async function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), length?: bigint): Promise<string> {
    const path = freshPath("raw");
    const json = Buffer.from(typeof header === "string" ? header : JSON.stringify(header), "utf8");
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(length ?? BigInt(json.length));
    await writeFile(path, Buffer.concat([prefix, json, data]));
    return path;
}

async function tempFilesIn(directory: string): Promise<string[]> {
    return (await readdir(directory)).filter((name) => name.endsWith(".tmp"));
}

describe("round trip", () => {
    test("every dtype, with shape [2,3], reads back bit for bit", async () => {
        const path = freshPath("dtypes");
        const tensors = safetensorsDTypes.map((dtype) => ({name: `t_${dtype}`, dtype, shape: [2, 3], data: sample(dtype, 6)}));
        await writeSafetensors(path, tensors);
        const header = await readSafetensorsHeader(path);
        assert.equal(header.tensors.size, safetensorsDTypes.length);
        assert.equal(header.metadata, null);
        for (const {name, dtype, data} of tensors) {
            const info = header.tensors.get(name)!;
            assert.equal(info.dtype, dtype);
            assert.deepEqual(info.shape, [2, 3]);
            assert.equal(info.elements, 6);
            assert.equal(info.end - info.begin, 6 * safetensorsItemSize(dtype));
            const back = await readTensor(path, header, name);
            assert.equal(back.constructor, data.constructor, `${dtype} comes back as ${data.constructor.name}`);
            assert.deepEqual(back, data);
        }
        const expects = tensors.map((t) => `${t.name}=${t.dtype}:2,3`);
        const check = runValidator(path, expects);
        assert.equal(check.status, 0, check.out);
    });

    test("empty tensors (shape [0], [3,0]) and a scalar (shape [])", async () => {
        const path = freshPath("edge");
        await writeSafetensors(path, [
            {name: "empty", dtype: "F32", shape: [0], data: new Float32Array(0)},
            {name: "empty2d", dtype: "F16", shape: [3, 0], data: new Uint16Array(0)},
            {name: "scalar", dtype: "F64", shape: [], data: Float64Array.of(Math.PI)},
            {name: "after", dtype: "U8", shape: [2], data: Uint8Array.of(7, 9)}
        ]);
        const header = await readSafetensorsHeader(path);
        assert.equal(header.tensors.get("empty")!.elements, 0);
        assert.equal(header.tensors.get("scalar")!.elements, 1);
        assert.deepEqual(header.tensors.get("scalar")!.shape, []);
        assert.deepEqual(await readTensor(path, header, "empty"), new Float32Array(0));
        assert.deepEqual(await readTensor(path, header, "empty2d"), new Uint16Array(0));
        assert.deepEqual(await readTensor(path, header, "scalar"), Float64Array.of(Math.PI));
        assert.deepEqual(await readTensor(path, header, "after"), Uint8Array.of(7, 9));
        const check = runValidator(path, ["empty=F32:0", "empty2d=F16:3,0", "scalar=F64:", "after=U8:2"]);
        assert.equal(check.status, 0, check.out);
    });

    test("a file with no tensors at all", async () => {
        const path = freshPath("none");
        await writeSafetensors(path, [], {format: "pt"});
        const header = await readSafetensorsHeader(path);
        assert.equal(header.tensors.size, 0);
        assert.deepEqual(header.metadata, {format: "pt"});
        assert.equal(header.fileSize, header.dataOffset);
        assert.equal(runValidator(path).status, 0);
    });

    test("metadata round trips, including non-ASCII text", async () => {
        const path = freshPath("meta");
        const metadata = {format: "pt", "mixz.step": "42", note: "größe ✓ 🚀", empty: ""};
        await writeSafetensors(path, [{name: "w", dtype: "BF16", shape: [1], data: Uint16Array.of(0x3f80)}], metadata);
        const header = await readSafetensorsHeader(path);
        assert.deepEqual(header.metadata, metadata);
        assert.equal(runValidator(path, ["w=BF16:1"]).status, 0);
    });

    test("data given as async chunks of any typed-array kind is written without assembling it", async () => {
        const path = freshPath("chunks");
        const whole = sample("F32", 10) as Float32Array;
        async function* pieces(): AsyncGenerator<ArrayBufferView> {
            yield whole.subarray(0, 3);
            yield new Uint8Array(whole.buffer, 12, 8); // elements 3..4 as raw bytes
            yield new DataView(whole.buffer, 20, 0); // empty chunk
            yield whole.subarray(5);
        }
        await writeSafetensors(path, [{name: "x", dtype: "F32", shape: [10], data: pieces()}]);
        const header = await readSafetensorsHeader(path);
        assert.deepEqual(await readTensor(path, header, "x"), whole);
    });

    test("an existing file is replaced", async () => {
        const path = freshPath("replace");
        await writeSafetensors(path, [{name: "a", dtype: "I8", shape: [1], data: Int8Array.of(1)}]);
        await writeSafetensors(path, [{name: "b", dtype: "I8", shape: [2], data: Int8Array.of(2, 3)}]);
        const header = await readSafetensorsHeader(path);
        assert.deepEqual([...header.tensors.keys()], ["b"]);
        assert.deepEqual(await tempFilesIn(dir), []);
    });
});

describe("layout", () => {
    test("header padded with spaces to 8 bytes, metadata first, tensors by item size then name, all aligned", async () => {
        const path = freshPath("layout");
        await writeSafetensors(
            path,
            [
                {name: "b8", dtype: "U8", shape: [3], data: Uint8Array.of(1, 2, 3)},
                {name: "a16", dtype: "F16", shape: [1], data: Uint16Array.of(1)},
                {name: "z64", dtype: "I64", shape: [1], data: BigInt64Array.of(-1n)},
                {name: "a64", dtype: "F64", shape: [1], data: Float64Array.of(2)},
                {name: "m32", dtype: "F32", shape: [3], data: Float32Array.of(1, 2, 3)},
                {name: "B", dtype: "U8", shape: [1], data: Uint8Array.of(9)}
            ],
            {k: "v"}
        );
        const bytes = await readFile(path);
        const length = Number(bytes.readBigUInt64LE(0));
        assert.equal(length % 8, 0);
        const text = bytes.subarray(8, 8 + length).toString("utf8");
        assert.match(text, /^\{"__metadata__":\{"k":"v"\},"a64":/);
        assert.match(text, /\} *$/);
        assert.ok(!/\s/.test(text.trimEnd()), "compact JSON");
        const header = await readSafetensorsHeader(path);
        const order = [...header.tensors].sort(([, a], [, b]) => a.begin - b.begin).map(([name]) => name);
        assert.deepEqual(order, ["a64", "z64", "m32", "a16", "B", "b8"]);
        for (const info of header.tensors.values()) {
            assert.equal((header.dataOffset + info.begin) % safetensorsItemSize(info.dtype), 0, "naturally aligned");
        }
    });

    test("names sort by UTF-8 bytes, as the reference does (not by UTF-16 code units)", async () => {
        const path = freshPath("utf8");
        // U+FF5E is one UTF-16 unit above the surrogates of U+1F600, but below it in UTF-8.
        const names = ["\u{1F600}", "\uFF5E", "a"];
        await writeSafetensors(
            path,
            names.map((name) => ({name, dtype: "U8" as const, shape: [1], data: Uint8Array.of(1)}))
        );
        const header = await readSafetensorsHeader(path);
        const order = [...header.tensors].sort(([, a], [, b]) => a.begin - b.begin).map(([name]) => name);
        assert.deepEqual(order, ["a", "\uFF5E", "\u{1F600}"]);
    });
});

describe("range reads", () => {
    test("element ranges of every size come back right, for 1-, 2-, 4- and 8-byte dtypes", async () => {
        const path = freshPath("ranges");
        const dtypes: SafetensorsDType[] = ["U8", "BF16", "F32", "I64"];
        const tensors = dtypes.map((dtype) => ({name: dtype, dtype, shape: [4, 5], data: sample(dtype, 20)}));
        await writeSafetensors(path, tensors);
        const header = await readSafetensorsHeader(path);
        for (const {name, data} of tensors) {
            for (const [from, to] of [[0, 20], [0, 1], [19, 20], [7, 13], [5, 5], [0, 0], [20, 20]] as const) {
                const part = await readTensor(path, header, name, {from, to});
                assert.deepEqual(part, data.slice(from, to), `${name} [${from}, ${to})`);
            }
        }
    });

    test("a range read touches only its own bytes (the rest of the file may be gone)", async () => {
        const path = freshPath("partial");
        await writeSafetensors(path, [{name: "big", dtype: "F32", shape: [1000], data: sample("F32", 1000)}]);
        const header = await readSafetensorsHeader(path);
        // Cut the file after element 100: elements [10, 100) are still there, [0, 1000) is not.
        await truncate(path, header.dataOffset + 100 * 4);
        const slice = await readTensor(path, header, "big", {from: 10, to: 100});
        assert.deepEqual(slice, (sample("F32", 1000) as Float32Array).slice(10, 100));
        await expectCode(readTensor(path, header, "big"), ErrorCodes.safetensors, /truncated file/);
    });

    test("reads through an open FileHandle, naming the file from the header", async () => {
        const path = freshPath("handle");
        await writeSafetensors(path, [{name: "x", dtype: "I32", shape: [3], data: Int32Array.of(1, -2, 3)}]);
        const handle = await open(path, "r");
        try {
            const header = await readSafetensorsHeader(handle, {path: "shard-0"});
            assert.equal(header.path, "shard-0");
            assert.deepEqual(await readTensor(handle, header, "x", {from: 1, to: 3}), Int32Array.of(-2, 3));
            await expectCode(readTensor(handle, header, "y"), ErrorCodes.safetensors, /^shard-0: no tensor "y"/);
        } finally {
            await handle.close();
        }
    });

    test("ranges out of bounds, reversed or fractional are refused", async () => {
        const path = freshPath("badrange");
        await writeSafetensors(path, [{name: "x", dtype: "U8", shape: [4], data: new Uint8Array(4)}]);
        const header = await readSafetensorsHeader(path);
        for (const range of [{from: 0, to: 5}, {from: 3, to: 2}, {from: -1, to: 2}, {from: 0.5, to: 2}, {from: 0, to: Number.NaN}]) {
            await expectCode(readTensor(path, header, "x", range), ErrorCodes.safetensors, /element range .* is not within \[0, 4\]/);
        }
    });
});

describe("corrupt files", () => {
    const f32x2 = {dtype: "F32", shape: [2], data_offsets: [0, 8]};

    async function refused(path: string, message: RegExp): Promise<void> {
        const error = await expectCode(readSafetensorsHeader(path), ErrorCodes.safetensors, message);
        assert.ok(error.message.startsWith(`${path}: `), `names the file: ${error.message}`);
        assert.ok(!error.message.includes("\n"), "one line");
        const check = runValidator(path);
        assert.equal(check.status, 1, `the Python validator refuses it too: ${check.out}`);
    }

    test("a file shorter than the 8-byte length", async () => {
        const path = freshPath("tiny");
        await writeFile(path, Buffer.from([1, 0, 0]));
        await refused(path, /truncated file: 3 bytes/);
    });

    test("a truncated header (length beyond the file)", async () => {
        const path = await rawFile({x: f32x2}, new Uint8Array(8));
        const bytes = await readFile(path);
        await writeFile(path, bytes.subarray(0, 20));
        await refused(path, /bad header length \d+: the file has only 12 bytes after the length/);
    });

    test("a header length far beyond the file, and beyond the 100 MB limit", async () => {
        await refused(await rawFile({}, new Uint8Array(0), 4096n), /bad header length 4096/);
        await refused(await rawFile({}, new Uint8Array(0), 0xffff_ffff_ffff_ffffn), /larger than the 100000000-byte limit/);
    });

    test("truncated data", async () => {
        const path = await rawFile({x: f32x2, y: {dtype: "F32", shape: [2], data_offsets: [8, 16]}}, new Uint8Array(12));
        await refused(path, /tensor "y" data_offsets \[8,16\] run past the end of the 12-byte data buffer/);
    });

    test("invalid JSON, a non-object header, a header not starting with '{', invalid UTF-8", async () => {
        await refused(await rawFile('{"x": {"dtype": "F32",'), /not valid JSON/);
        await refused(await rawFile("[1, 2]  "), /does not start with '\{'/);
        await refused(await rawFile(' {"x": 1}'), /does not start with '\{'/);
        const bad = freshPath("utf");
        const prefix = Buffer.alloc(8);
        prefix.writeBigUInt64LE(4n);
        await writeFile(bad, Buffer.concat([prefix, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])]));
        await refused(bad, /not valid UTF-8/);
    });

    test("overlapping offsets", async () => {
        const path = await rawFile(
            {a: {dtype: "F32", shape: [2], data_offsets: [0, 8]}, b: {dtype: "F32", shape: [2], data_offsets: [4, 12]}},
            new Uint8Array(12)
        );
        await refused(path, /tensor "b" data_offsets \[4,12\] overlap tensor "a"/);
    });

    test("a gap between tensors, and at the start", async () => {
        await refused(
            await rawFile({a: {dtype: "U8", shape: [2], data_offsets: [0, 2]}, b: {dtype: "U8", shape: [2], data_offsets: [4, 6]}}, new Uint8Array(6)),
            /gap in the data buffer: bytes \[2,4\)/
        );
        await refused(await rawFile({a: {dtype: "U8", shape: [2], data_offsets: [1, 3]}}, new Uint8Array(3)), /gap .* bytes \[0,1\)/);
    });

    test("bytes after the last tensor", async () => {
        await refused(await rawFile({x: f32x2}, new Uint8Array(9)), /cover 8 bytes but the data buffer has 9/);
    });

    test("a byte length that does not match the shape", async () => {
        await refused(
            await rawFile({x: {dtype: "F32", shape: [2, 3], data_offsets: [0, 20]}}, new Uint8Array(20)),
            /tensor "x" shape \[2,3\] F32 needs 24 bytes but data_offsets \[0,20\] give 20/
        );
    });

    test("shapes that are not lists of non-negative integers", async () => {
        for (const shape of [[2.5], [-1], ["2"], 2, null, [true]]) {
            await refused(
                await rawFile({x: {dtype: "U8", shape, data_offsets: [0, 2]}}, new Uint8Array(2)),
                /tensor "x" shape .* is not a list of non-negative integers/
            );
        }
    });

    test("bad data_offsets", async () => {
        for (const offsets of [[0], [0, 1, 2], [0.5, 2], [-1, 2], "0,2", null]) {
            await refused(
                await rawFile({x: {dtype: "U8", shape: [2], data_offsets: offsets}}, new Uint8Array(2)),
                /data_offsets .* is not a pair of non-negative integers/
            );
        }
        await refused(await rawFile({x: {dtype: "U8", shape: [0], data_offsets: [2, 1]}}, new Uint8Array(2)), /end before they begin/);
    });

    test("unknown and missing dtypes, non-object entries, bad metadata", async () => {
        await refused(await rawFile({x: {dtype: "F4", shape: [2], data_offsets: [0, 1]}}, new Uint8Array(1)), /unknown dtype "F4"/);
        await refused(await rawFile({x: {dtype: "f32", shape: [1], data_offsets: [0, 4]}}, new Uint8Array(4)), /unknown dtype "f32"/);
        await refused(await rawFile({x: {shape: [1], data_offsets: [0, 4]}}, new Uint8Array(4)), /tensor "x" has no dtype/);
        await refused(await rawFile({x: [1, 2]}), /tensor "x" is not an object/);
        await refused(await rawFile({__metadata__: {a: 1}}), /"__metadata__" value of "a" is not a string/);
        await refused(await rawFile({__metadata__: ["a"]}), /"__metadata__" is not an object/);
    });

    test("a missing file is a read error, not a format error", async () => {
        const missing = join(dir, "does-not-exist.safetensors");
        await expectCode(readSafetensorsHeader(missing), ErrorCodes.fileRead, /ENOENT/);
    });

    test("files written by hand with a valid layout are accepted (unpadded header, empty tensors at one offset)", async () => {
        const path = await rawFile(
            {e1: {dtype: "F32", shape: [0], data_offsets: [0, 0]}, e2: {dtype: "I64", shape: [4, 0], data_offsets: [0, 0]}, x: {dtype: "U8", shape: [3], data_offsets: [0, 3]}},
            Uint8Array.of(1, 2, 3)
        );
        const header = await readSafetensorsHeader(path);
        assert.deepEqual(await readTensor(path, header, "x"), Uint8Array.of(1, 2, 3));
        assert.equal(runValidator(path).status, 0);
    });
});

describe("writer", () => {
    const good: SafetensorsTensor = {name: "ok", dtype: "U8", shape: [1], data: Uint8Array.of(1)};

    async function rejected(tensors: readonly SafetensorsTensor[], message: RegExp, metadata?: Record<string, string>): Promise<void> {
        const path = freshPath("rejected");
        await expectCode(writeSafetensors(path, tensors, metadata), ErrorCodes.safetensors, message);
        await expectCode(readSafetensorsHeader(path), ErrorCodes.fileRead);
        assert.deepEqual(await tempFilesIn(dir), []);
    }

    test("refuses tensors whose data does not match, duplicate or reserved names, unknown dtypes, bad shapes", async () => {
        await rejected([{name: "x", dtype: "F32", shape: [2, 3], data: new Float32Array(5)}], /tensor "x" shape \[2,3\] F32 needs 24 bytes but its data has 20/);
        await rejected([{name: "x", dtype: "F32", shape: [2], data: new Float64Array(1)}], /is F32 but its data is a Float64Array/);
        await rejected([{name: "x", dtype: "BF16", shape: [2], data: new Int16Array(2)}], /is BF16 but its data is a Int16Array/);
        await rejected([good, {...good}], /tensor "ok" appears twice/);
        await rejected([{...good, name: "__metadata__"}], /reserved for metadata/);
        await rejected([{...good, dtype: "F4" as SafetensorsDType}], /unknown dtype "F4"/);
        await rejected([{...good, shape: [0.5]}], /shape \[0.5\] is not a list/);
        await rejected([{...good, data: [1] as unknown as Uint8Array}], /neither a typed array nor an async iterable/);
        await rejected([good], /metadata value of "n" is not a string/, {n: 1 as unknown as string});
    });

    test("raw bytes (Buffer, DataView) are accepted for any dtype", async () => {
        const path = freshPath("raw-bytes");
        const f32 = Float32Array.of(1.5, -2);
        await writeSafetensors(path, [
            {name: "a", dtype: "F32", shape: [2], data: Buffer.from(f32.buffer)},
            {name: "b", dtype: "I64", shape: [1], data: new DataView(new ArrayBuffer(8))}
        ]);
        const header = await readSafetensorsHeader(path);
        assert.deepEqual(await readTensor(path, header, "a"), f32);
        assert.deepEqual(await readTensor(path, header, "b"), BigInt64Array.of(0n));
    });

    test("a write that fails part-way leaves the previous file intact and no temporary file", async () => {
        const path = freshPath("atomic");
        await writeSafetensors(path, [{name: "old", dtype: "F32", shape: [4], data: Float32Array.of(1, 2, 3, 4)}]);
        const before = await readFile(path);

        async function* failing(): AsyncGenerator<ArrayBufferView> {
            yield new Float32Array(100);
            throw new Error("gather from rank 3 failed");
        }
        const big = {name: "new", dtype: "F32" as const, shape: [1000], data: failing()};
        await assert.rejects(writeSafetensors(path, [big]), /gather from rank 3 failed/);
        assert.deepEqual(await readFile(path), before);
        assert.deepEqual(await tempFilesIn(dir), []);

        async function* short(): AsyncGenerator<ArrayBufferView> {
            yield new Float32Array(999);
        }
        await expectCode(writeSafetensors(path, [{...big, data: short()}]), ErrorCodes.safetensors, /needs 4000 bytes but its chunks give 3996/);
        async function* long(): AsyncGenerator<ArrayBufferView> {
            yield new Float32Array(600);
            yield new Float32Array(600);
        }
        await expectCode(writeSafetensors(path, [{...big, data: long()}]), ErrorCodes.safetensors, /chunks give more/);
        assert.deepEqual(await readFile(path), before);
        assert.deepEqual(await tempFilesIn(dir), []);
    });

    test("a failing rename (target is a directory) removes the temporary file", async () => {
        const sub = join(dir, "rename-fails");
        await mkdir(sub);
        const target = join(sub, "model.safetensors");
        await mkdir(target);
        await writeFile(join(target, "keep"), "x");
        await expectCode(writeSafetensors(target, [good]), ErrorCodes.fileWrite, /model\.safetensors: cannot write the file \(E/);
        assert.deepEqual(await readdir(sub), ["model.safetensors"]);
        assert.deepEqual(await readdir(target), ["keep"]);
    });

    test("a directory that does not exist is a write error", async () => {
        await expectCode(writeSafetensors(join(dir, "no", "such", "dir.safetensors"), [good]), ErrorCodes.fileWrite, /ENOENT/);
    });
});

describe("the Python validator", () => {
    test("accepts what the writer writes, checks expectations, and refuses mismatches", async () => {
        const path = freshPath("py");
        await writeSafetensors(path, [
            {name: "w", dtype: "F16", shape: [3, 2], data: new Uint16Array(6)},
            {name: "b", dtype: "F32", shape: [3], data: new Float32Array(3)}
        ], {format: "pt"});
        const ok = runValidator(path, ["w=F16:3,2", "b=F32:3"]);
        assert.equal(ok.status, 0, ok.out);
        assert.match(ok.out, /^OK .*: 2 tensors, 24 data bytes, 1 metadata keys$/);
        assert.equal(runValidator(path, ["w=F16:3,2", "b=F32:3", "c=U8:1"]).status, 1);
        assert.equal(runValidator(path, ["w=BF16:3,2", "b=F32:3"]).status, 1);
        assert.equal(runValidator(path, ["w=F16:6", "b=F32:3"]).status, 1);
        assert.equal(runValidator(path, ["w=F16:3,2"]).status, 1, "unexpected extra tensor");
        assert.equal(runValidator(path, ["nonsense"]).status, 2);
    });

    test("refuses a duplicate key, which JSON.parse cannot see", async () => {
        const path = await rawFile('{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', Uint8Array.of(1));
        assert.equal(runValidator(path).status, 1);
    });
});

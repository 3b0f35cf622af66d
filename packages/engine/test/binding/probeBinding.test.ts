import assert from "node:assert/strict";
import {randomBytes} from "node:crypto";
import {mkdtempSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, before, describe, test} from "node:test";

import {ErrorCodes, MixzError} from "@mixz/protocol";

import {nativeInfo, probeBinding} from "@mixz/engine";

/** Asserts that `promise` rejects with a MixzError with `code` and returns it for further checks. */
async function expectRejection(promise: Promise<unknown>, code: string): Promise<MixzError> {
    let caught: unknown;
    try {
        await promise;
    } catch (error) {
        caught = error;
    }
    assert.ok(caught instanceof MixzError, `expected a MixzError, got ${String(caught)}`);
    assert.equal(caught.code, code);
    return caught;
}

describe("probeBinding", () => {
    let dir = "";
    before(() => {
        dir = mkdtempSync(join(tmpdir(), "mixz-probe-binding-"));
    });
    after(() => {
        rmSync(dir, {recursive: true, force: true});
    });

    test("the built addon answers in a child process with what it answers here", async () => {
        const probed = await probeBinding();
        assert.deepEqual(probed, nativeInfo());
        assert.ok(probed.gloo.transports.includes("tcp"));
        assert.match(probed.gloo.tcpDevice ?? "", /127\.0\.0\.1/);
        assert.equal(probed.blas.name, "OpenBLAS");
        assert.equal(probed.blas.sgemmOk, true);
    });

    test("a garbage .node file is MIXZ_ERR_NATIVE_LOAD", async () => {
        const path = join(dir, "x.node");
        writeFileSync(path, randomBytes(4096));
        const error = await expectRejection(probeBinding({path}), ErrorCodes.nativeLoad);
        assert.ok(error.message.startsWith(`cannot load native addon ${path}: `), error.message);
        assert.ok(error.message.includes("npm run build:native"), error.message);
    });

    test("a missing file is MIXZ_ERR_NATIVE_MISSING without starting a process", async () => {
        const path = join(dir, "absent.node");
        const error = await expectRejection(probeBinding({path}), ErrorCodes.nativeMissing);
        assert.ok(error.message.includes("npm run build:native"), error.message);
    });

    test("a binary that kills its process is reported with the signal, and this process lives", async () => {
        // Stands in for a crashing static constructor: loading it raises SIGSEGV.
        const path = join(dir, "crash.cjs");
        writeFileSync(path, 'process.kill(process.pid, "SIGSEGV");\n');
        const error = await expectRejection(probeBinding({path}), ErrorCodes.nativeLoad);
        assert.ok(error.message.includes(path), error.message);
        assert.ok(error.message.includes("SIGSEGV"), error.message);
        assert.equal(error.context["signal"], "SIGSEGV");
    });

    test("a binary that hangs is killed after timeoutMs", async () => {
        const path = join(dir, "hang.cjs");
        writeFileSync(path, "for (;;) {}\n");
        const started = Date.now();
        const error = await expectRejection(probeBinding({path, timeoutMs: 300}), ErrorCodes.nativeLoad);
        assert.ok(error.message.includes("did not answer within 300 ms"), error.message);
        assert.ok(Date.now() - started < 10_000);
    });

    test("a module without the expected exports is MIXZ_ERR_NATIVE_LOAD naming them", async () => {
        const path = join(dir, "empty.cjs");
        writeFileSync(path, "module.exports = {};\n");
        const error = await expectRejection(probeBinding({path}), ErrorCodes.nativeLoad);
        assert.ok(error.message.includes("version()"), error.message);
    });

    test("rejects a timeout that is not a positive number", async () => {
        await assert.rejects(probeBinding({timeoutMs: 0}), RangeError);
        await assert.rejects(probeBinding({timeoutMs: Number.NaN}), RangeError);
    });
});

import assert from "node:assert/strict";
import {randomBytes} from "node:crypto";
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, before, describe, test} from "node:test";

import {ErrorCodes, MixzError} from "@mixz/protocol";

import {defaultBindingPaths, loadBinding, nativeBinaryEnvVar, NativeErrorCodes, nativeInfo} from "@mixz/engine";

const rootPackage = JSON.parse(readFileSync(new URL("../../../../package.json", import.meta.url), "utf8")) as {
    version: string;
};

/** Asserts that `fn` throws a MixzError with `code` and returns it for further checks. */
function expectMixzError(fn: () => unknown, code: string): MixzError {
    let caught: unknown;
    try {
        fn();
    } catch (error) {
        caught = error;
    }
    assert.ok(caught instanceof MixzError, `expected a MixzError, got ${String(caught)}`);
    assert.equal(caught.code, code);
    return caught;
}

describe("loadBinding: the built addon", () => {
    test("reports the Gloo TCP transport with a working loopback device", () => {
        const info = loadBinding().version();
        assert.ok(info.gloo.transports.includes("tcp"), `transports: ${info.gloo.transports.join(", ")}`);
        assert.equal(info.gloo.tcpDeviceError, null);
        assert.match(info.gloo.tcpDevice ?? "", /127\.0\.0\.1/);
        assert.match(info.gloo.version, /^\d+\.\d+\.\d+$/);
    });

    test("reports OpenBLAS as the library serving sgemm, with a correct product", () => {
        const {blas} = loadBinding().version();
        assert.equal(blas.name, "OpenBLAS");
        assert.equal(blas.sgemmOk, true);
        assert.match(blas.library, /openblas/i);
        assert.ok(blas.threads >= 1);
        assert.notEqual(blas.corename, "");
    });

    test("reports the build itself", () => {
        const info = loadBinding().version();
        assert.equal(info.version, rootPackage.version, "native/include/mixz/common/version.h is out of date");
        assert.ok(info.buildType === "Release" || info.buildType === "Debug");
        assert.match(info.compiler, /\d+\.\d+/);
        assert.equal(typeof info.cpu.avx2, "boolean");
        assert.equal(typeof info.cpu.fma, "boolean");
    });

    test("returns one module per path, and nativeInfo goes through it", () => {
        const binding = loadBinding();
        assert.equal(loadBinding(), binding);
        assert.deepEqual(nativeInfo(), binding.version());
    });

    test("turns a native exception into an Error with the stable code", () => {
        // version() takes no arguments; the addon throws mixz::InvalidArgument, and the single
        // catch site (native/addon/convertError.cc) copies its code onto the JS error.
        const version = loadBinding().version as (...args: unknown[]) => unknown;
        assert.throws(
            () => version(1),
            (error: unknown) => {
                assert.ok(error instanceof Error);
                assert.equal((error as Error & {code?: unknown}).code, NativeErrorCodes.invalidArgument);
                assert.match(error.message, /^\[addon\/addon\.cc:\d+\] version\(\) takes no arguments, got 1$/);
                return true;
            }
        );
    });
});

describe("loadBinding: failures", () => {
    let dir = "";
    before(() => {
        dir = mkdtempSync(join(tmpdir(), "mixz-load-binding-"));
    });
    after(() => {
        rmSync(dir, {recursive: true, force: true});
    });

    test("a path that does not exist is MIXZ_ERR_NATIVE_MISSING and says how to build", () => {
        const path = join(dir, "absent", "mixz.node");
        const error = expectMixzError(() => loadBinding({path}), ErrorCodes.nativeMissing);
        assert.ok(error.message.includes(path), error.message);
        assert.ok(error.message.includes("npm run build:native"), error.message);
        assert.equal(error.category, "platform");
    });

    test(`${nativeBinaryEnvVar} chooses the binary when no path is given`, () => {
        const path = join(dir, "from-env.node");
        const saved = process.env[nativeBinaryEnvVar];
        process.env[nativeBinaryEnvVar] = path;
        try {
            const error = expectMixzError(() => loadBinding(), ErrorCodes.nativeMissing);
            assert.ok(error.message.includes(path), error.message);
        } finally {
            if (saved === undefined) delete process.env[nativeBinaryEnvVar];
            else process.env[nativeBinaryEnvVar] = saved;
        }
    });

    test("a file that is not a shared object is MIXZ_ERR_NATIVE_LOAD", () => {
        const path = join(dir, "x.node");
        writeFileSync(path, randomBytes(4096));
        const error = expectMixzError(() => loadBinding({path}), ErrorCodes.nativeLoad);
        assert.ok(error.message.startsWith(`cannot load native addon ${path}: `), error.message);
        assert.ok(error.message.includes("npm run build:native"), error.message);
        assert.ok(!error.message.includes("\n"), "one line");
        assert.ok(error.cause instanceof Error);
    });

    test("a module without the expected exports is MIXZ_ERR_NATIVE_LOAD naming them", () => {
        const path = join(dir, "empty-binding.cjs");
        writeFileSync(path, "module.exports = {version: 42};\n");
        const error = expectMixzError(() => loadBinding({path}), ErrorCodes.nativeLoad);
        assert.ok(error.message.includes("version()"), error.message);
    });

    test("the default search prefers Release over Debug", () => {
        assert.match(defaultBindingPaths[0] ?? "", /native[/\\]build[/\\]Release[/\\]mixz\.node$/);
        assert.match(defaultBindingPaths[1] ?? "", /native[/\\]build[/\\]Debug[/\\]mixz\.node$/);
    });
});

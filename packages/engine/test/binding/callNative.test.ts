// The one native-call wrapper: every native failure reaches TypeScript as a MixzError with the
// native code, a category by code, and the caller's stack (the communicator, the quantizer and the
// engine all call through it; test/comm/communicator.test.ts sees a real transport failure).
import assert from "node:assert/strict";
import {describe, it} from "node:test";

import {callNative, callNativeSync, callSite, fromNative, nativeErrorCategory, NativeErrorCodes} from "@mixz/engine";
import {MixzError} from "@mixz/protocol";

function nativeLike(code: string, message: string): Error {
    return Object.assign(new Error(message), {code});
}

describe("callNative", () => {
    it("categories by code", () => {
        assert.equal(nativeErrorCategory(NativeErrorCodes.io), "infra");
        assert.equal(nativeErrorCategory(NativeErrorCodes.invalidArgument), "worker");
        assert.equal(nativeErrorCategory(NativeErrorCodes.internal), "platform");
    });

    it("a rejected native call becomes a MixzError with the call site's stack", async () => {
        async function userCode(): Promise<void> {
            const site = callSite();
            await callNative(site, async () => {
                await new Promise((resolve) => setImmediate(resolve)); // as from libuv's pool: no JS stack
                throw nativeLike(NativeErrorCodes.io, "rank 3 (host b): connection closed");
            });
        }
        await assert.rejects(userCode(), (error: unknown) => {
            assert.ok(error instanceof MixzError);
            assert.equal(error.code, "MIXZ_ERR_IO");
            assert.equal(error.category, "infra");
            assert.match(error.stack ?? "", /userCode/);
            assert.match(error.stack ?? "", /^MixzError: rank 3/);
            return true;
        });
    });

    it("sync calls convert too; other errors and MixzErrors pass through unchanged", () => {
        assert.throws(() => callNativeSync(callSite(), () => { throw nativeLike(NativeErrorCodes.invalidArgument, "bad"); }),
            (error: unknown) => error instanceof MixzError && error.code === "MIXZ_ERR_INVALID_ARGUMENT" && error.category === "worker");
        const plain = new TypeError("not native");
        assert.equal(fromNative(plain, callSite()), plain);
        const mixz = new MixzError("MIXZ_ERR_IO", "x", {category: "infra"});
        assert.equal(fromNative(mixz, callSite()), mixz);
        assert.equal(fromNative(nativeLike("ENOENT", "y"), callSite()) instanceof MixzError, false, "only MIXZ_ERR_ codes are native");
    });
});

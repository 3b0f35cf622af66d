// The assertion the engine's tests make of every refused call: it rejects with a MixzError of this
// code whose message matches.
import assert from "node:assert/strict";

import {MixzError} from "@mixz/protocol";

export async function rejectsWith(promise: Promise<unknown>, code: string, pattern?: RegExp): Promise<MixzError> {
    let caught: unknown;
    try {
        await promise;
    } catch (error) {
        caught = error;
    }
    assert.ok(caught instanceof MixzError, `expected a MixzError, got ${String(caught)}`);
    assert.equal(caught.code, code, caught.message);
    if (pattern !== undefined) assert.match(caught.message, pattern);
    return caught;
}

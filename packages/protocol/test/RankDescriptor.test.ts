import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {ErrorCodes, MixzError, parseRankDescriptor} from "@mixz/protocol";

const good = {
    protocol: 1, mixzVersion: "0.1.0", jobId: "j", token: "t", coordinatorUrl: "ws://h:1/", rank: 1, localRank: 0, worldSize: 2, localWorldSize: 1,
    crossRank: 1, crossSize: 2, host: "h", slot: 0, nodeSlots: [0], masterAddr: "h", masterPort: 1, script: "/s.ts", args: ["a"], cwd: "/",
    env: {A: "1"}, config: null, joinTimeoutMs: 1, heartbeatIntervalMs: 1, heartbeatMisses: 1, logFormat: "json"
};

describe("parseRankDescriptor", () => {
    it("accepts a complete descriptor", () => assert.deepEqual(parseRankDescriptor(JSON.stringify(good)), good));
    const bad: Array<[string, unknown, RegExp]> = [
        ["not JSON", "{", /not JSON/],
        ["an array", [], /mixzVersion must be a non-empty string/],
        ["rank beyond the world", {...good, rank: 2}, /rank and localRank must be below/],
        ["negative slot", {...good, slot: -1}, /slot must be a whole number ≥ 0/],
        ["env with a number", {...good, env: {A: 1}}, /env must be an object of strings/],
        ["no config key", Object.fromEntries(Object.entries(good).filter(([k]) => k !== "config")), /config must be present/],
        ["bad log format", {...good, logFormat: "xml"}, /logFormat must be pretty or json/]
    ];
    for (const [name, value, pattern] of bad) {
        it(`rejects ${name}`, () => {
            assert.throws(() => parseRankDescriptor(typeof value === "string" ? value : JSON.stringify(value)), (error: unknown) => {
                assert.ok(error instanceof MixzError);
                assert.equal(error.code, ErrorCodes.protocol);
                assert.match(error.message, pattern);
                return true;
            });
        });
    }
});

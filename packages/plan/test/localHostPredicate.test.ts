import assert from "node:assert/strict";
import {hostname, networkInterfaces} from "node:os";
import {describe, it} from "node:test";
import {localHostPredicate} from "@mixz/plan";

describe("localHostPredicate on this machine", () => {
    const isLocal = localHostPredicate();
    it("loopback names and IPv4 loopback addresses are local", () => {
        for (const host of ["localhost", "LOCALHOST", "127.0.0.1", "127.0.0.2", "127.255.0.1"]) assert.equal(isLocal(host), true, host);
    });
    it("this machine's host name (full and short) is local", () => {
        assert.equal(isLocal(hostname()), true);
        assert.equal(isLocal(hostname().split(".")[0]!), true);
    });
    it("the addresses of its interfaces are local", () => {
        for (const addresses of Object.values(networkInterfaces())) {
            for (const address of addresses ?? []) assert.equal(isLocal(address.address), true, address.address);
        }
    });
    it("other names are not, and nothing is resolved through DNS", () => {
        for (const host of ["worker-0", "10.255.255.254", "127.0.0", "127.0.0.1.example", "localhost.example"]) {
            assert.equal(isLocal(host), false, host);
        }
    });
});

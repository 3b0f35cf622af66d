// known_hosts parsing and host key checks, with keys and files made here; where ssh-keygen is
// installed (openssh-client), its hashing, lookup and fingerprints are the reference.
import assert from "node:assert/strict";
import {createHmac, randomBytes} from "node:crypto";
import {spawnSync} from "node:child_process";
import {existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";
import {hostKeyFingerprint, hostKeyType, KnownHosts, knownHostsName} from "../../src/ssh/index.js";

const sshKeygen = "/usr/bin/ssh-keygen";
const haveKeygen = existsSync(sshKeygen);

function sshString(value: Buffer | string): Buffer {
    const body = typeof value === "string" ? Buffer.from(value, "latin1") : value;
    const length = Buffer.alloc(4);
    length.writeUInt32BE(body.length);
    return Buffer.concat([length, body]);
}

/** A well-formed key blob of `type` (ed25519 layout: type, then 32 bytes). */
function fakeKey(type = "ssh-ed25519"): Buffer {
    return Buffer.concat([sshString(type), sshString(randomBytes(32))]);
}

function line(names: string, key: Buffer, marker = ""): string {
    return `${marker}${marker === "" ? "" : " "}${names} ${hostKeyType(key)} ${key.toString("base64")}`;
}

function hashed(name: string): string {
    const salt = randomBytes(20);
    return `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update(name).digest("base64")}`;
}

describe("knownHostsName", () => {
    it("is the bare name for port 22 and [name]:port otherwise", () => {
        assert.equal(knownHostsName("gpu1", 22), "gpu1");
        assert.equal(knownHostsName("127.0.0.1", 2222), "[127.0.0.1]:2222");
        assert.equal(knownHostsName("::1", 2222), "[::1]:2222");
    });
});

describe("KnownHosts.check", () => {
    const key = fakeKey();
    const other = fakeKey();
    const rsa = fakeKey("ssh-rsa");

    const cases: Array<[string, string, string, number, "match" | "unknown" | "changed" | "revoked"]> = [
        ["plain name", line("gpu1", key), "gpu1", 22, "match"],
        ["names are case-insensitive", line("GPU1.Example.COM", key), "gpu1.example.com", 22, "match"],
        ["comma list", line("gpu0,gpu1,10.0.0.1", key), "10.0.0.1", 22, "match"],
        ["[host]:port for another port", line("[127.0.0.1]:2222", key), "127.0.0.1", 2222, "match"],
        ["a bare name does not cover another port", line("127.0.0.1", key), "127.0.0.1", 2222, "unknown"],
        ["[host]:port does not cover port 22", line("[127.0.0.1]:2222", key), "127.0.0.1", 22, "unknown"],
        ["[host]:22 is not how port 22 is written", line("[gpu1]:22", key), "gpu1", 22, "unknown"],
        ["another port of the same host", line("[127.0.0.1]:2222", key), "127.0.0.1", 2223, "unknown"],
        ["wildcard *", line("*.cluster", key), "gpu7.cluster", 22, "match"],
        ["wildcard ?", line("gpu?", key), "gpu7", 22, "match"],
        ["wildcard does not overreach", line("gpu?", key), "gpu17", 22, "unknown"],
        ["wildcard inside brackets", line("[10.0.0.*]:2222", key), "10.0.0.9", 2222, "match"],
        ["negation excludes the line", line("*.cluster,!login.cluster", key), "login.cluster", 22, "unknown"],
        ["negation leaves other names", line("*.cluster,!login.cluster", key), "gpu1.cluster", 22, "match"],
        ["hashed name", line(hashed("gpu1"), key), "gpu1", 22, "match"],
        ["hashed [host]:port", line(hashed("[127.0.0.2]:2222"), key), "127.0.0.2", 2222, "match"],
        ["hashed name of another host", line(hashed("gpu2"), key), "gpu1", 22, "unknown"],
        ["hashed name compared lower-cased", line(hashed("gpu1"), key), "GPU1", 22, "match"],
        ["same type, other key: changed", line("gpu1", other), "gpu1", 22, "changed"],
        ["hashed, other key: changed", line(hashed("gpu1"), other), "gpu1", 22, "changed"],
        ["only another type known: unknown", line("gpu1", rsa), "gpu1", 22, "unknown"],
        ["one of several keys matches", [line("gpu1", other), line("gpu1", key)].join("\n"), "gpu1", 22, "match"],
        ["a match wins over an older changed line", [line("gpu1", other), line("gpu1", rsa), line("gpu1", key)].join("\n"), "gpu1", 22, "match"],
        ["@revoked wins over a match", [line("gpu1", key), line("*", key, "@revoked")].join("\n"), "gpu1", 22, "revoked"],
        ["@revoked of another key does nothing", [line("gpu1", key), line("*", other, "@revoked")].join("\n"), "gpu1", 22, "match"],
        ["@cert-authority lines are ignored", line("gpu1", key, "@cert-authority"), "gpu1", 22, "unknown"],
        ["@cert-authority with another key is not a change", line("gpu1", other, "@cert-authority"), "gpu1", 22, "unknown"],
        ["comments, blank lines, CRLF and a trailing comment", `# c\n\n   \r\n${line("gpu1", key)} root@admin\r\n`, "gpu1", 22, "match"],
        ["indented line", `   ${line("gpu1", key)}`, "gpu1", 22, "match"],
        ["empty file", "", "gpu1", 22, "unknown"]
    ];
    for (const [name, text, host, port, expected] of cases) {
        it(name, () => assert.equal(KnownHosts.parse(text).check(host, port, key).status, expected));
    }

    it("reports the fingerprint, and for a change where the expected key is", () => {
        const knownHosts = KnownHosts.parse(`# first\n${line("gpu1", other)}\n`, "/x/known_hosts");
        const check = knownHosts.check("gpu1", 22, key);
        assert.deepEqual(check, {
            status: "changed",
            keyType: "ssh-ed25519",
            fingerprint: hostKeyFingerprint(key),
            file: "/x/known_hosts",
            line: 2,
            expectedFingerprint: hostKeyFingerprint(other)
        });
        assert.match(check.fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
    });

    it("skips malformed lines without losing the good ones", () => {
        const text = [
            "gpu1",
            "gpu1 ssh-ed25519",
            "gpu1 ssh-ed25519 !!notbase64!!",
            `gpu1 ssh-rsa ${key.toString("base64")}`,
            "gpu1 1024 35 1234567",
            `@bogus gpu1 ssh-ed25519 ${key.toString("base64")}`,
            line("gpu1", key)
        ].join("\n");
        const knownHosts = KnownHosts.parse(text);
        assert.equal(knownHosts.entries.length, 1);
        assert.deepEqual(knownHosts.problems.map((problem) => problem.line), [1, 2, 3, 4, 5, 6]);
        assert.equal(knownHosts.check("gpu1", 22, key).status, "match");
    });

    it("lists known key types for a host, to ask the server for those first", () => {
        const knownHosts = KnownHosts.parse([line("gpu1", rsa), line("gpu1", key), line("gpu2", fakeKey("ecdsa-sha2-nistp256")), line("gpu1", other, "@revoked")].join("\n"));
        assert.deepEqual(knownHosts.keyTypesFor("gpu1", 22), ["ssh-rsa", "ssh-ed25519"]);
        assert.deepEqual(knownHosts.keyTypesFor("gpu3", 22), []);
    });
});

describe("KnownHosts files", () => {
    const scratch = mkdtempSync(join(tmpdir(), "mixz-known-hosts-"));
    after(() => rmSync(scratch, {recursive: true, force: true}));

    it("loads several files in order; missing ones are empty", () => {
        const first = join(scratch, "first");
        const second = join(scratch, "second");
        const key = fakeKey();
        writeFileSync(second, `${line("gpu1", key)}\n`);
        const knownHosts = KnownHosts.load([first, second, join(scratch, "missing", "deeper")]);
        assert.equal(knownHosts.check("gpu1", 22, key).status, "match");
        assert.equal(knownHosts.entries[0]?.file, second);
    });

    it("append creates the directory (0700) and the file (0600) and writes a proper line", () => {
        const file = join(scratch, "new-home", ".ssh", "known_hosts");
        const key = fakeKey();
        const knownHosts = KnownHosts.load([file]);
        assert.equal(knownHosts.check("127.0.0.1", 2222, key).status, "unknown");
        const entry = knownHosts.append("127.0.0.1", 2222, key);
        assert.equal(entry.line, 1);
        assert.equal(readFileSync(file, "utf8"), `[127.0.0.1]:2222 ssh-ed25519 ${key.toString("base64")}\n`);
        assert.equal(statSync(file).mode & 0o777, 0o600);
        assert.equal(statSync(join(scratch, "new-home", ".ssh")).mode & 0o777, 0o700);
        assert.equal(knownHosts.check("127.0.0.1", 2222, key).status, "match");
        assert.equal(KnownHosts.load([file]).check("127.0.0.1", 2222, key).status, "match");
    });

    it("append keeps existing lines, adds a missing final newline, and writes port 22 bare", () => {
        const file = join(scratch, "existing");
        const old = fakeKey();
        writeFileSync(file, `# mine\n${line("gpu0", old)}`, {mode: 0o644});
        const key = fakeKey();
        const entry = KnownHosts.load([file]).append("GPU1", 22, key);
        assert.equal(entry.line, 3);
        assert.equal(readFileSync(file, "utf8"), `# mine\n${line("gpu0", old)}\ngpu1 ssh-ed25519 ${key.toString("base64")}\n`);
        assert.equal(statSync(file).mode & 0o777, 0o644, "an existing file keeps its mode");
        const reloaded = KnownHosts.load([file]);
        assert.equal(reloaded.check("gpu0", 22, old).status, "match");
        assert.equal(reloaded.check("gpu1", 22, key).status, "match");
    });

    it("append refuses names that would corrupt the file", () => {
        const knownHosts = KnownHosts.load([join(scratch, "never")]);
        for (const name of ["", "a b", "a,b", "*", "a\nb", "|1|x"]) assert.throws(() => knownHosts.append(name, 22, fakeKey()), RangeError);
        assert.throws(() => knownHosts.append("gpu1", 22, Buffer.from("junk")), RangeError);
        assert.equal(existsSync(join(scratch, "never")), false);
    });

    it("hostKeyType reads the type of a blob and rejects junk", () => {
        assert.equal(hostKeyType(fakeKey("ssh-ed25519")), "ssh-ed25519");
        assert.equal(hostKeyType(Buffer.alloc(0)), null);
        assert.equal(hostKeyType(Buffer.from([0, 0, 0, 200, 1])), null);
        assert.equal(hostKeyType(sshString("bad type")), null);
    });

    describe("agrees with ssh-keygen", {skip: haveKeygen ? false : "ssh-keygen not installed (openssh-client)"}, () => {
        const keyFile = join(scratch, "host_key");
        let blob: Buffer;

        it("on the SHA256 fingerprint", () => {
            const made = spawnSync(sshKeygen, ["-q", "-t", "ed25519", "-N", "", "-f", keyFile], {encoding: "utf8"});
            assert.equal(made.status, 0, made.stderr);
            blob = Buffer.from(readFileSync(`${keyFile}.pub`, "utf8").split(" ")[1]!, "base64");
            const listed = spawnSync(sshKeygen, ["-l", "-E", "sha256", "-f", `${keyFile}.pub`], {encoding: "utf8"});
            assert.equal(hostKeyFingerprint(blob), listed.stdout.split(" ")[1]);
        });

        it("on hashed lines written by ssh-keygen -H", () => {
            const file = join(scratch, "hashed_known_hosts");
            writeFileSync(file, `${line("gpu1,[127.0.0.2]:2222", blob)}\n`);
            const hashing = spawnSync(sshKeygen, ["-H", "-f", file], {encoding: "utf8"});
            assert.equal(hashing.status, 0, hashing.stderr);
            const text = readFileSync(file, "utf8");
            assert.match(text, /^\|1\|/);
            assert.doesNotMatch(text, /gpu1|127\.0\.0\.2/);
            const knownHosts = KnownHosts.load([file]);
            assert.equal(knownHosts.check("gpu1", 22, blob).status, "match");
            assert.equal(knownHosts.check("127.0.0.2", 2222, blob).status, "match");
            assert.equal(knownHosts.check("127.0.0.2", 22, blob).status, "unknown");
        });

        it("on the lines append writes (ssh-keygen -F finds them)", () => {
            const file = join(scratch, "appended_known_hosts");
            KnownHosts.load([file]).append("127.0.0.1", 2222, blob);
            const found = spawnSync(sshKeygen, ["-F", "[127.0.0.1]:2222", "-f", file], {encoding: "utf8"});
            assert.equal(found.status, 0, found.stderr);
            assert.match(found.stdout, /\[127\.0\.0\.1\]:2222 ssh-ed25519 /);
        });
    });
});

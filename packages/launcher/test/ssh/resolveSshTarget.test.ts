// resolveSshTarget against fake homes and configs in temp dirs (nothing of the real ~/.ssh is read).
import assert from "node:assert/strict";
import {mkdirSync, mkdtempSync, rmSync, writeFileSync} from "node:fs";
import {hostname, tmpdir, userInfo} from "node:os";
import {join, resolve} from "node:path";
import {after, describe, it} from "node:test";
import {ErrorCodes, MixzError} from "@mixz/protocol";
import {resolveSshTarget, type ResolveSshTargetOptions} from "../../src/ssh/index.js";

const scratch = mkdtempSync(join(tmpdir(), "mixz-ssh-target-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

let homes = 0;
/** A fresh fake home with `.ssh/config` = config (if given) and the named key files. */
function fakeHome(config: string | undefined, keys: readonly string[] = []): string {
    const home = join(scratch, `home${homes++}`);
    mkdirSync(join(home, ".ssh"), {recursive: true});
    if (config !== undefined) writeFileSync(join(home, ".ssh", "config"), config);
    for (const key of keys) writeFileSync(join(home, ".ssh", key), "not really a key\n");
    return home;
}

function resolveIn(home: string, host: string, options: Omit<ResolveSshTargetOptions, "homeDir"> = {}): ReturnType<typeof resolveSshTarget> {
    return resolveSshTarget(host, {homeDir: home, globalKnownHostsFiles: [], ...options});
}

function errorOf(fn: () => unknown): MixzError {
    try {
        fn();
    } catch (error) {
        assert.ok(error instanceof MixzError, `expected a MixzError, got ${String(error)}`);
        return error;
    }
    assert.fail("expected an error");
}

describe("resolveSshTarget without a config", () => {
    it("uses the host itself, port 22, the local user, the default keys that exist and ~/.ssh/known_hosts", () => {
        const home = fakeHome(undefined, ["id_rsa", "id_ed25519"]);
        assert.deepEqual(resolveIn(home, "gpu1"), {
            host: "gpu1",
            hostName: "gpu1",
            port: 22,
            user: userInfo().username,
            identityFiles: [join(home, ".ssh", "id_ed25519"), join(home, ".ssh", "id_rsa")],
            knownHostsFiles: [join(home, ".ssh", "known_hosts"), join(home, ".ssh", "known_hosts2")]
        });
    });
    it("lists no identity file when none of the defaults exists", () => {
        assert.deepEqual(resolveIn(fakeHome(undefined), "gpu1").identityFiles, []);
    });
    it("a missing home and a missing config are fine", () => {
        const target = resolveSshTarget("gpu1", {homeDir: join(scratch, "no-such-home"), globalKnownHostsFiles: []});
        assert.equal(target.port, 22);
    });
    it("adds OpenSSH's global known_hosts files after the user's by default", () => {
        const home = fakeHome(undefined);
        const target = resolveSshTarget("gpu1", {homeDir: home});
        assert.deepEqual(target.knownHostsFiles.slice(2), ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"]);
    });
});

describe("resolveSshTarget with ~/.ssh/config", () => {
    const config = `
# cluster
Host node-a
    HostName 10.1.0.1
    Port 2200
    User alice
    IdentityFile ~/.ssh/cluster_key
    IdentityFile %d/.ssh/%r@%h
    StrictHostKeyChecking accept-new

Host node-b
    HostName=10.1.0.2
    IdentityFile "~/.ssh/key with space"

Host *.internal
    HostName %h.example.com
    UserKnownHostsFile ~/.ssh/cluster_hosts /etc/cluster/known_hosts
    HostKeyAlias cluster-key

Host noid
    IdentityFile none

Host bad-port
    Port ssh

Host bad-token
    IdentityFile ~/.ssh/%Z

Host strict-off
    StrictHostKeyChecking off

Host *
    User bob
    Port 2222
    IdentityFile ~/.ssh/fallback
`;
    const home = fakeHome(config, ["id_ed25519"]);

    it("follows an alias: HostName, Port, User, IdentityFile (accumulating, ~ and %d %r %h expanded)", () => {
        const target = resolveIn(home, "node-a");
        assert.equal(target.host, "node-a");
        assert.equal(target.hostName, "10.1.0.1");
        assert.equal(target.port, 2200);
        assert.equal(target.user, "alice");
        assert.deepEqual(target.identityFiles, [
            join(home, ".ssh", "cluster_key"),
            join(home, ".ssh", "alice@10.1.0.1"),
            join(home, ".ssh", "fallback")
        ]);
        assert.equal(target.strictHostKeyChecking, "accept-new");
    });
    it("first value wins: Host * fills only what the alias left open", () => {
        const target = resolveIn(home, "node-b");
        assert.equal(target.hostName, "10.1.0.2");
        assert.equal(target.port, 2222);
        assert.equal(target.user, "bob");
        assert.deepEqual(target.identityFiles, [join(home, ".ssh", "key with space"), join(home, ".ssh", "fallback")]);
    });
    it("--ssh-port beats the config's Port, which beats 22", () => {
        assert.equal(resolveIn(home, "node-a", {sshPort: 2022}).port, 2022);
        assert.equal(resolveIn(home, "node-a").port, 2200);
        assert.equal(resolveIn(fakeHome("Host x\n  User y\n"), "other").port, 22);
    });
    it("expands %h in HostName; UserKnownHostsFile lists several files; HostKeyAlias is kept", () => {
        const target = resolveIn(home, "gpu3.internal");
        assert.equal(target.hostName, "gpu3.internal.example.com");
        assert.deepEqual(target.knownHostsFiles, [join(home, ".ssh", "cluster_hosts"), "/etc/cluster/known_hosts"]);
        assert.equal(target.hostKeyAlias, "cluster-key");
    });
    it("IdentityFile none leaves only the other configured files", () => {
        assert.deepEqual(resolveIn(home, "noid").identityFiles, [join(home, ".ssh", "fallback")]);
    });
    it("configured identity files are listed even when missing (the connection skips them), defaults are not added", () => {
        assert.ok(!resolveIn(home, "node-a").identityFiles.includes(join(home, ".ssh", "id_ed25519")));
    });
    it("normalises StrictHostKeyChecking off to no", () => {
        assert.equal(resolveIn(home, "strict-off").strictHostKeyChecking, "no");
    });
    it("an unknown host only gets Host * values", () => {
        const target = resolveIn(home, "elsewhere");
        assert.equal(target.hostName, "elsewhere");
        assert.equal(target.user, "bob");
        assert.equal(target.strictHostKeyChecking, undefined);
        assert.equal(target.hostKeyAlias, undefined);
    });
    it("a Port that is not a number is an error naming the file, host and directive", () => {
        const error = errorOf(() => resolveIn(home, "bad-port"));
        assert.equal(error.code, ErrorCodes.ssh);
        assert.equal(error.category, "user");
        assert.match(error.message, /config: Host bad-port: Port: "ssh" is not a port number/);
    });
    it("an unsupported %-token is an error", () => {
        const error = errorOf(() => resolveIn(home, "bad-token"));
        assert.equal(error.code, ErrorCodes.ssh);
        assert.match(error.message, /IdentityFile.*unsupported token "%Z"/);
    });
    it("rejects a --ssh-port outside 1-65535", () => {
        for (const port of [0, -1, 65536, 22.5, Number.NaN]) {
            const error = errorOf(() => resolveIn(home, "node-a", {sshPort: port}));
            assert.equal(error.code, ErrorCodes.usage);
        }
    });
    it("reads another config file when configPath is given", () => {
        const other = join(scratch, "other_config");
        writeFileSync(other, "Host node-a\n  HostName 192.0.2.7\n  Port 2201\n");
        const target = resolveSshTarget("node-a", {homeDir: home, configPath: other, globalKnownHostsFiles: []});
        assert.equal(target.hostName, "192.0.2.7");
        assert.equal(target.port, 2201);
        assert.deepEqual(target.identityFiles, [join(home, ".ssh", "id_ed25519")], "no IdentityFile there: the defaults that exist");
    });
    it("keywords are case-insensitive, as in OpenSSH", () => {
        const target = resolveIn(fakeHome("host gpu9\n  hostname 10.9.9.9\n  PORT 2299\n  user carol\n  identityfile ~/k\n"), "gpu9");
        assert.equal(target.hostName, "10.9.9.9");
        assert.equal(target.port, 2299);
        assert.equal(target.user, "carol");
        assert.equal(target.identityFiles.length, 1);
    });
    it("expands %u %n %p %l %% in paths; a relative path is resolved against the working directory", () => {
        const custom = fakeHome("Host h1\n  HostName real1\n  Port 2000\n  IdentityFile keys/%u-%n-%p-%l-%%\n");
        const target = resolveIn(custom, "h1");
        assert.deepEqual(target.identityFiles, [resolve(`keys/${userInfo().username}-h1-2000-${hostname()}-%`)]);
    });
    it("a config path that cannot be read (a directory) is a file error", () => {
        const error = errorOf(() => resolveSshTarget("x", {homeDir: home, configPath: scratch}));
        assert.equal(error.code, ErrorCodes.fileRead);
    });
});

// The SSH layer against a real OpenSSH server on loopback (SshServerFixture): two host names
// (127.0.0.1 and 127.0.0.2, also as ~/.ssh/config aliases node-a and node-b), host key checking,
// authentication, remote commands, failures named per host, and nothing left running afterwards.
import assert from "node:assert/strict";
import {spawn, spawnSync, type ChildProcess} from "node:child_process";
import {existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync} from "node:fs";
import {createServer, type Server} from "node:net";
import {tmpdir} from "node:os";
import {join} from "node:path";
import type {Readable} from "node:stream";
import {after, before, describe, it} from "node:test";
import {createLogger} from "@mixz/log";
import {ErrorCodes, MixzError} from "@mixz/protocol";
import {
    probeHosts,
    resolveSshTarget,
    SshConnection,
    type RemoteProcess,
    type SshConnectOptions,
    type SshTarget
} from "../../packages/launcher/src/ssh/index.js";
import {isAlive} from "../helpers/mixzProcess.js";
import {SshServerFixture} from "./SshServerFixture.js";

const logger = createLogger({component: "ssh-test", level: process.env["MIXZ_TEST_SSH_DEBUG"] === "1" ? "debug" : "silent"});
const options: SshConnectOptions = {acceptNewHostKeys: false, agentSocket: null, connectTimeoutMs: 5_000, logger};

let server: SshServerFixture;
let scratch: string;

function target(host: string, overrides: Partial<SshTarget> = {}): SshTarget {
    return {...resolveSshTarget(host, {homeDir: server.home, globalKnownHostsFiles: []}), ...overrides};
}

async function expectSshError(promise: Promise<unknown>): Promise<MixzError> {
    try {
        await promise;
    } catch (error) {
        assert.ok(error instanceof MixzError, `expected a MixzError, got ${String(error)}`);
        assert.equal(error.code, ErrorCodes.ssh);
        assert.equal(error.category, "infra");
        return error;
    }
    assert.fail("expected the connection to fail");
}

function collect(stream: Readable): Promise<string> {
    return new Promise((resolve, reject) => {
        let text = "";
        stream.setEncoding("utf8");
        stream.on("data", (chunk: string) => (text += chunk));
        stream.on("end", () => resolve(text));
        stream.on("error", reject);
    });
}

async function run(connection: SshConnection, argv: readonly string[], cwd = "/", env: Record<string, string> = {}): Promise<{stdout: string; stderr: string; code: number | null; signal: string | null}> {
    const process = await connection.exec(argv, {cwd, env});
    const [stdout, stderr, exit] = await Promise.all([collect(process.stdout), collect(process.stderr), process.exit]);
    return {stdout, stderr, ...exit};
}

async function waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
        if (Date.now() > deadline) assert.fail(`${what} (not within ${timeoutMs} ms)\n--- sshd log ---\n${server.log().slice(-3000)}`);
        await new Promise((resolve) => setTimeout(resolve, 25));
    }
}

/** Every test closes what it opened: sshd must have no connection left (its children are per connection). */
async function assertNoSessions(): Promise<void> {
    await waitFor(() => server.descendants().length === 0, 5_000, `sshd still has children: ${server.descendants().join(", ")}`);
}

before(async () => {
    server = await SshServerFixture.start();
    scratch = mkdtempSync(join(tmpdir(), "mixz-ssh-test-"));
});

after(async () => {
    const dir = server.dir;
    const pid = server.pid;
    await server.stop();
    rmSync(scratch, {recursive: true, force: true});
    assert.equal(isAlive(pid), false, "sshd is gone");
    assert.equal(existsSync(dir), false, "the fixture's temp dir is gone");
});

describe("SshConnection: commands over a real sshd", () => {
    let connection: SshConnection;
    before(async () => {
        connection = await SshConnection.open(target("node-a"), options);
    });
    after(async () => {
        await connection[Symbol.asyncDispose]();
        await assertNoSessions();
    });

    it("runs echo", async () => {
        assert.deepEqual(await run(connection, ["echo", "hello"]), {stdout: "hello\n", stderr: "", code: 0, signal: null});
    });

    it("reports stdout, stderr and exit code 3", async () => {
        const result = await run(connection, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"]);
        assert.deepEqual(result, {stdout: "out\n", stderr: "err\n", code: 3, signal: null});
    });

    it("reports death by a signal", async () => {
        const result = await run(connection, ["/bin/sh", "-c", "kill -KILL $$"]);
        assert.equal(result.code, null);
        assert.equal(result.signal, "SIGKILL");
        const term = await run(connection, ["/bin/sh", "-c", "kill -TERM $$"]);
        assert.equal(term.signal, "SIGTERM");
    });

    it("passes argv, env and cwd through the remote shell byte for byte", async () => {
        const words = ["", "a b", "it's", 'say "hi"', "$HOME", "`id`", "$(id)", "x\ny", "*", "a;b", "日本語 🚀", "\\", "--", "-n", "'", "!!", "~"];
        const cwd = join(scratch, `cwd with 'quote' "dq" $x; *`);
        mkdirSync(cwd);
        const env = {SPACES: "a b", QUOTE: "it's", DOLLAR: "$PATH `x`", NEWLINE: "1\n2", EMPTY: "", MIXZ_TOKEN_LIKE: "k=v"};
        const result = await run(connection, ["/bin/sh", "-c", `printf '%s\\0' "$PWD" "$@"; env -0 >&2`, "sh", ...words], cwd, env);
        assert.equal(result.code, 0, result.stderr);
        const parts = result.stdout.split("\0");
        assert.equal(parts.pop(), "");
        assert.deepEqual(parts, [realpathSync(cwd), ...words]);
        const remoteEnv = new Map(result.stderr.split("\0").filter((entry) => entry !== "").map((entry) => [entry.slice(0, entry.indexOf("=")), entry.slice(entry.indexOf("=") + 1)] as const));
        for (const [name, value] of Object.entries(env)) assert.equal(remoteEnv.get(name), value, name);
    });

    it("fails the command, not the connection, when cwd does not exist", async () => {
        const result = await run(connection, ["/bin/true"], join(scratch, "no such dir"));
        assert.notEqual(result.code, 0);
        assert.match(result.stderr, /no such dir/i);
        assert.deepEqual(await run(connection, ["echo", "still fine"]), {stdout: "still fine\n", stderr: "", code: 0, signal: null});
    });

    it("rejects (not throws) a command line it cannot build", async () => {
        await assert.rejects(connection.exec([], {cwd: "/", env: {}}), RangeError);
        await assert.rejects(connection.exec(["echo"], {cwd: "/", env: {"BAD-NAME": "x"}}), RangeError);
    });

    it("writes stdin (the stdin option first), and EOF ends a reader", async () => {
        const process = await connection.exec(["cat"], {cwd: "/", env: {}, stdin: "token\n"});
        const stdout = collect(process.stdout);
        assert.equal(process.writeStdin("more\n"), true);
        process.closeStdin();
        assert.equal(process.writeStdin("late\n"), false);
        assert.equal(await stdout, "token\nmore\n");
        assert.deepEqual(await process.exit, {code: 0, signal: null});
    });

    it("runs many channels at once on one connection", async () => {
        const results = await Promise.all(Array.from({length: 8}, (_, rank) => run(connection, ["/bin/sh", "-c", `echo $RANK`], "/", {RANK: String(rank)})));
        assert.deepEqual(results.map((result) => result.stdout), Array.from({length: 8}, (_, rank) => `${rank}\n`));
    });

    it("closing a channel makes a remote stdin reader exit by itself", async () => {
        const pidFile = join(scratch, "reader.pid");
        const process = await connection.exec(["/bin/sh", "-c", `echo $$ > '${pidFile}'; exec cat`], {cwd: "/", env: {}});
        process.stdout.resume();
        process.stderr.resume();
        await waitFor(() => existsSync(pidFile) && readFileSync(pidFile, "utf8").endsWith("\n"), 5_000, "the remote command wrote its pid");
        const pid = Number(readFileSync(pidFile, "utf8"));
        assert.ok(isAlive(pid), "the reader runs");
        process.close();
        await waitFor(() => !isAlive(pid), 5_000, `remote pid ${pid} exited after the channel closed`);
        const exit = await process.exit;
        assert.equal(exit.code === 0 || exit.code === null, true, JSON.stringify(exit));
    });
});

describe("SshConnection: hosts and ~/.ssh/config aliases", () => {
    it("node-a and node-b reach the server on 127.0.0.1 and 127.0.0.2", async () => {
        for (const [alias, address] of [["node-a", "127.0.0.1"], ["node-b", "127.0.0.2"]] as const) {
            const resolved = target(alias);
            assert.equal(resolved.hostName, address);
            assert.equal(resolved.port, server.port);
            const connection = await SshConnection.open(resolved, options);
            try {
                const result = await run(connection, ["/bin/sh", "-c", 'echo "$SSH_CONNECTION"']);
                // SSH_CONNECTION: client address, client port, server address, server port.
                assert.deepEqual(result.stdout.trim().split(" ").slice(2), [address, String(server.port)]);
            } finally {
                connection.close();
                assert.equal(await connection.closed, null);
            }
        }
        await assertNoSessions();
    });

    it("plain addresses with --ssh-port use the same known_hosts lines", async () => {
        const resolved = resolveSshTarget("127.0.0.2", {homeDir: server.home, sshPort: server.port, globalKnownHostsFiles: []});
        assert.deepEqual(resolved.identityFiles, [server.userKeyPath], "the default key of the test HOME");
        const connection = await SshConnection.open(resolved, options);
        connection.close();
        await connection.closed;
        await assertNoSessions();
    });
});

describe("SshConnection: authentication", () => {
    it("a key the server does not know → auth failure naming the host and what was tried", async () => {
        const error = await expectSshError(SshConnection.open(target("node-wrong-key"), options));
        assert.equal(error.context["cause"], "auth");
        assert.match(error.message, new RegExp(`^ssh node-wrong-key \\(127\\.0\\.0\\.1:${server.port}\\): authentication failed as ${server.user} \\(tried: .*id_wrong\\)$`));
        assert.equal(error.message.includes("\n"), false);
        await assertNoSessions();
    });

    it("a key with a passphrase is skipped without a prompt, the next key is used", async () => {
        const connection = await SshConnection.open(target("node-a", {identityFiles: [server.passphraseKeyPath, server.userKeyPath]}), options);
        connection.close();
        await connection.closed;
        const error = await expectSshError(SshConnection.open(target("node-a", {identityFiles: [server.passphraseKeyPath, join(scratch, "missing_key")]}), options));
        assert.equal(error.context["cause"], "auth");
        assert.match(error.message, /tried: nothing: no ssh-agent and no usable identity file; skipped: .*id_passphrase \(passphrase\)/);
        await assertNoSessions();
    });

    it("ssh-agent comes first (a wrong file key after it does not matter)", {skip: existsSync("/usr/bin/ssh-agent") ? false : "ssh-agent not installed"}, async () => {
        const socket = join(scratch, "agent.sock");
        const agent: ChildProcess = spawn("/usr/bin/ssh-agent", ["-D", "-a", socket], {stdio: "ignore"});
        try {
            await waitFor(() => existsSync(socket), 5_000, "ssh-agent listens");
            const added = spawnSync("/usr/bin/ssh-add", [server.userKeyPath], {env: {SSH_AUTH_SOCK: socket}, encoding: "utf8"});
            assert.equal(added.status, 0, added.stderr);
            const connection = await SshConnection.open(target("node-wrong-key"), {...options, agentSocket: socket});
            assert.equal((await run(connection, ["echo", "via agent"])).stdout, "via agent\n");
            connection.close();
            await connection.closed;
        } finally {
            agent.kill("SIGTERM");
        }
        // A socket path that does not exist is skipped, not fatal.
        const error = await expectSshError(SshConnection.open(target("node-wrong-key"), {...options, agentSocket: join(scratch, "no-agent.sock")}));
        assert.equal(error.context["cause"], "auth");
        assert.doesNotMatch(error.message, /agent/);
        await assertNoSessions();
    });
});

describe("SshConnection: host keys", () => {
    function knownHostsWith(name: string, text: string): string {
        const file = join(scratch, name);
        writeFileSync(file, text);
        return file;
    }

    it("an unknown host key is refused, with its fingerprint", async () => {
        const file = knownHostsWith("empty_known_hosts", "");
        const error = await expectSshError(SshConnection.open(target("node-a", {knownHostsFiles: [file]}), options));
        assert.equal(error.context["cause"], "host-key-unknown");
        assert.equal(error.context["fingerprint"], server.hostKeyFingerprint);
        assert.ok(error.message.includes(`unknown host key (ssh-ed25519 ${server.hostKeyFingerprint}); add it to ${file} or pass --ssh-accept-new-host-keys`), error.message);
        assert.equal(readFileSync(file, "utf8"), "", "nothing recorded");
        await assertNoSessions();
    });

    it("acceptNewHostKeys accepts an unknown key and records it under the HostName", async () => {
        const file = join(scratch, "new", "known_hosts");
        const connection = await SshConnection.open(target("node-b", {knownHostsFiles: [file]}), {...options, acceptNewHostKeys: true});
        connection.close();
        await connection.closed;
        assert.equal(readFileSync(file, "utf8"), `[127.0.0.2]:${server.port} ssh-ed25519 ${server.hostKey.toString("base64")}\n`);
        // Now known: a strict connection succeeds and nothing more is written.
        const again = await SshConnection.open(target("node-b", {knownHostsFiles: [file]}), options);
        again.close();
        await again.closed;
        assert.equal(readFileSync(file, "utf8").split("\n").length, 2);
        await assertNoSessions();
    });

    it("StrictHostKeyChecking accept-new in the config acts like --ssh-accept-new-host-keys", async () => {
        const file = join(scratch, "config_accept_new_known_hosts");
        const connection = await SshConnection.open(target("node-a", {knownHostsFiles: [file], strictHostKeyChecking: "accept-new"}), options);
        connection.close();
        await connection.closed;
        assert.match(readFileSync(file, "utf8"), /^\[127\.0\.0\.1\]:\d+ ssh-ed25519 /);
    });

    it("a changed host key is refused, even with acceptNewHostKeys, and known_hosts is left alone", async () => {
        const text = `[127.0.0.1]:${server.port} ssh-ed25519 ${server.otherHostKey.toString("base64")}\n`;
        const file = knownHostsWith("changed_known_hosts", text);
        for (const acceptNewHostKeys of [false, true]) {
            const error = await expectSshError(SshConnection.open(target("node-a", {knownHostsFiles: [file]}), {...options, acceptNewHostKeys}));
            assert.equal(error.context["cause"], "host-key-changed");
            assert.match(error.message, /HOST KEY CHANGED \(now ssh-ed25519 SHA256:.*, expected SHA256:.* at .*changed_known_hosts:1\); possible man-in-the-middle/);
            assert.ok(error.message.includes(server.hostKeyFingerprint));
        }
        assert.equal(readFileSync(file, "utf8"), text);
        await assertNoSessions();
    });

    it("HostKeyAlias is looked up and recorded as written, without the port", async () => {
        const file = knownHostsWith("alias_known_hosts", `mixz-cluster ssh-ed25519 ${server.hostKey.toString("base64")}\n`);
        const connection = await SshConnection.open(target("node-a", {knownHostsFiles: [file], hostKeyAlias: "mixz-cluster"}), options);
        connection.close();
        await connection.closed;
        const recorded = join(scratch, "alias_recorded_known_hosts");
        const accepted = await SshConnection.open(target("node-b", {knownHostsFiles: [recorded], hostKeyAlias: "other-alias"}), {...options, acceptNewHostKeys: true});
        accepted.close();
        await accepted.closed;
        assert.equal(readFileSync(recorded, "utf8"), `other-alias ssh-ed25519 ${server.hostKey.toString("base64")}\n`);
        await assertNoSessions();
    });

    it("a revoked host key is refused", async () => {
        const file = knownHostsWith("revoked_known_hosts", `@revoked * ssh-ed25519 ${server.hostKey.toString("base64")}\n${server.knownHostsLine()}`);
        const error = await expectSshError(SshConnection.open(target("node-a", {knownHostsFiles: [file]}), {...options, acceptNewHostKeys: true}));
        assert.equal(error.context["cause"], "host-key-revoked");
        await assertNoSessions();
    });
});

describe("SshConnection: unreachable hosts", () => {
    it("a closed port → connection refused, naming alias and address", async () => {
        const error = await expectSshError(SshConnection.open(target("node-down"), options));
        assert.equal(error.context["cause"], "refused");
        assert.match(error.message, /^ssh node-down \(127\.0\.0\.1:1\): connection refused/);
    });

    it("a name that does not resolve → DNS failure", async () => {
        const error = await expectSshError(SshConnection.open(target("no-such-host.invalid"), options));
        assert.equal(error.context["cause"], "dns");
        assert.match(error.message, /^ssh no-such-host\.invalid: cannot resolve host name no-such-host\.invalid \((ENOTFOUND|EAI_AGAIN)\)$/);
    });

    it("a server that never speaks → timed out after N s", async () => {
        const silent: Server = createServer(() => {});
        await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
        const address = silent.address();
        const port = typeof address === "object" && address !== null ? address.port : 0;
        try {
            const started = Date.now();
            const error = await expectSshError(SshConnection.open(target("127.0.0.1", {port}), {...options, connectTimeoutMs: 400}));
            assert.equal(error.context["cause"], "timeout");
            assert.match(error.message, /timed out after 0\.4 s$/);
            assert.ok(Date.now() - started < 3_000);
        } finally {
            silent.close();
        }
    });
});

describe("probeHosts", () => {
    it("opens every host in parallel", async () => {
        const connections = await probeHosts([target("node-a"), target("node-b")], options);
        assert.deepEqual([...connections.keys()], ["node-a", "node-b"]);
        for (const connection of connections.values()) {
            assert.equal((await run(connection, ["echo", connection.target.host])).stdout, `${connection.target.host}\n`);
            connection.close();
            await connection.closed;
        }
        await assertNoSessions();
    });

    it("one error lists every failed host, one line each, and closes the good connections", async () => {
        const error = await expectSshError(probeHosts([target("node-a"), target("node-down"), target("no-such-host.invalid"), target("node-wrong-key")], options));
        const lines = error.message.split("\n");
        assert.equal(lines[0], "cannot reach 3 of 4 hosts over SSH:");
        assert.equal(lines.length, 4);
        assert.match(lines[1]!, /^ {2}ssh node-down \(127\.0\.0\.1:1\): connection refused/);
        assert.match(lines[2]!, /^ {2}ssh no-such-host\.invalid: cannot resolve host name/);
        assert.match(lines[3]!, /^ {2}ssh node-wrong-key .*authentication failed/);
        assert.doesNotMatch(error.message, /node-a/);
        assert.deepEqual(error.context["hosts"], ["node-down", "no-such-host.invalid", "node-wrong-key"]);
        assert.deepEqual((error.context["failures"] as Array<{cause: string}>).map((failure) => failure.cause), ["refused", "dns", "auth"]);
        await assertNoSessions(); // node-a's connection was closed
    });
});

describe("SshConnection: lifecycle", () => {
    it("closing the connection ends its commands' stdin: remote readers exit", async () => {
        const connection = await SshConnection.open(target("node-b"), options);
        const pidFile = join(scratch, "conn-reader.pid");
        const process: RemoteProcess = await connection.exec(["/bin/sh", "-c", `echo $$ > '${pidFile}'; exec cat`], {cwd: "/", env: {}});
        process.stdout.resume();
        process.stderr.resume();
        await waitFor(() => existsSync(pidFile) && readFileSync(pidFile, "utf8").endsWith("\n"), 5_000, "the remote command wrote its pid");
        const pid = Number(readFileSync(pidFile, "utf8"));
        connection.close();
        assert.equal(await connection.closed, null);
        await process.exit;
        await waitFor(() => !isAlive(pid), 5_000, `remote pid ${pid} exited after the connection closed`);
        await assertNoSessions();
        await assert.rejects(connection.exec(["true"], {cwd: "/", env: {}}), (error: unknown) => error instanceof MixzError && error.context["cause"] === "channel");
    });

    it("a connection lost under us settles `closed` with an error and ends running commands with no status", async () => {
        const connection = await SshConnection.open(target("node-a"), {...options, keepaliveIntervalMs: 200, keepaliveCountMax: 2});
        const process = await connection.exec(["sleep", "30"], {cwd: "/", env: {}});
        process.stdout.resume();
        process.stderr.resume();
        await waitFor(() => server.descendants().length > 0, 5_000, "sshd has a session");
        for (const pid of server.descendants()) {
            try {
                globalThis.process.kill(pid, "SIGKILL");
            } catch {
                // gone already
            }
        }
        const lost = await connection.closed;
        assert.ok(lost instanceof MixzError);
        assert.equal(lost.context["cause"], "lost");
        assert.match(lost.message, /^ssh node-a \(127\.0\.0\.1:\d+\): connection (lost|closed)/);
        assert.deepEqual(await process.exit, {code: null, signal: null});
        await assertNoSessions();
    });

    it("the fixture's stop() leaves nothing behind, even with a session running a command", async () => {
        const other = await SshServerFixture.start();
        const resolved = resolveSshTarget("127.0.0.2", {homeDir: other.home, sshPort: other.port, globalKnownHostsFiles: []});
        const connection = await SshConnection.open(resolved, options);
        const pidFile = join(scratch, "stop-sleeper.pid");
        const process = await connection.exec(["/bin/sh", "-c", `echo $$ > '${pidFile}'; exec sleep 60`], {cwd: "/", env: {}});
        process.stdout.resume();
        process.stderr.resume();
        await waitFor(() => existsSync(pidFile) && readFileSync(pidFile, "utf8").endsWith("\n"), 5_000, "the remote command wrote its pid");
        const sleeper = Number(readFileSync(pidFile, "utf8"));
        const sessions = other.descendants();
        assert.ok(sessions.includes(sleeper));
        await other.stop();
        assert.equal(isAlive(other.pid), false);
        assert.deepEqual(sessions.filter(isAlive), []);
        assert.equal(existsSync(other.dir), false);
        assert.ok((await connection.closed) instanceof MixzError);
        assert.deepEqual(await process.exit, {code: null, signal: null});
    });

    it("the fixture says how to get sshd when it is missing", async () => {
        await assert.rejects(SshServerFixture.start({sshdPath: "/nonexistent/sshd"}), /\/nonexistent\/sshd is missing: .*openssh-server.*run scripts\/bootstrap/);
    });

    it("sshd's MaxSessions refusal is a channel error naming the host", async () => {
        const limited = await SshServerFixture.start({maxSessions: 1});
        try {
            const resolved = {...resolveSshTarget("127.0.0.1", {homeDir: limited.home, sshPort: limited.port, globalKnownHostsFiles: []})};
            const connection = await SshConnection.open(resolved, options);
            const first = await connection.exec(["cat"], {cwd: "/", env: {}});
            first.stdout.resume();
            first.stderr.resume();
            const error = await expectSshError(connection.exec(["true"], {cwd: "/", env: {}}));
            assert.equal(error.context["cause"], "channel");
            assert.match(error.message, /^ssh 127\.0\.0\.1 \(127\.0\.0\.1:\d+\): cannot start a command: .*open failed \(sshd allows MaxSessions channels per connection, 10 by default\)$/);
            connection.close();
            await connection.closed;
        } finally {
            await limited.stop();
        }
    });
});

// mixz launch across two "hosts" reached over a real OpenSSH server on loopback (127.0.0.1 and
// 127.0.0.2, through ~/.ssh/config aliases of a test HOME), forcing SSH for local names.
import assert from "node:assert/strict";
import {mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import {fixture, runMixz, startMixz, waitGone} from "../helpers/mixzProcess.js";
import {SshServerFixture} from "./SshServerFixture.js";

const rankWorld = fixture("integration/fixtures/rankWorld.ts");
const misbehave = fixture("faults/fixtures/misbehave.ts");
const scratch = mkdtempSync(join(tmpdir(), "mixz-ssh-launch-"));
let sshd: SshServerFixture;

before(async () => {
    sshd = await SshServerFixture.start();
});
after(async () => {
    await sshd?.stop();
    rmSync(scratch, {recursive: true, force: true});
});

function hostfile(text: string): string {
    const path = join(mkdtempSync(join(scratch, "h-")), "hosts");
    writeFileSync(path, text);
    return path;
}

/** The launcher runs with the fixture's HOME, so ~/.ssh/config, keys and known_hosts are the test's. */
function env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
    return {HOME: sshd.home, SSH_AUTH_SOCK: "", ...extra};
}

describe("launch over SSH", () => {
    it("two nodes through ~/.ssh/config aliases: every rank joins, store and barrier work, env is forwarded", async () => {
        const hosts = hostfile("node-a slots=2\nnode-b slots=2\n");
        const run = await runMixz(["launch", "-H", hosts, "--master-addr", "127.0.0.1", "--master-port", "0", rankWorld, "x y"], {
            env: env({MIXZ_TEST_FORWARD: "forwarded", NOT_FORWARDED_VAR: "1"})
        });
        assert.equal(run.code, 0, run.stderr);
        for (const [host, rank, local, node] of [["node-a", 0, 0, 0], ["node-a", 1, 1, 0], ["node-b", 2, 0, 1], ["node-b", 3, 1, 1]] as const) {
            assert.match(run.stdout, new RegExp(`^\\[${host}:${rank}\\] rank ${rank}/4 local ${local}/2 node ${node}/2 ok args=\\["x y"\\] env=forwarded$`, "m"));
        }
    });
    it("--force-ssh reaches 127.0.0.1 over SSH too; --dry-run shows user@host:port", async () => {
        const hosts = hostfile(`127.0.0.1 slots=1\nnode-b slots=1\n`);
        const dry = await runMixz(["launch", "-H", hosts, "--force-ssh", "--ssh-port", String(sshd.port), "--dry-run", "--json", rankWorld], {env: env()});
        assert.equal(dry.code, 0, dry.stderr);
        const plan = JSON.parse(dry.stdout) as {nodes: Array<{spawn: string; ssh: {user: string; host_name: string; port: number}}>};
        assert.deepEqual(plan.nodes.map((n) => [n.spawn, n.ssh.host_name, n.ssh.port]), [["ssh", "127.0.0.1", sshd.port], ["ssh", "127.0.0.2", sshd.port]]);
        const run = await runMixz(["launch", "-H", hosts, "--force-ssh", "--ssh-port", String(sshd.port), "--master-addr", "127.0.0.1", "--master-port", "0", rankWorld], {env: env()});
        assert.equal(run.code, 0, run.stderr);
        assert.match(run.stdout, /^\[127\.0\.0\.1:0\] rank 0\/2 /m);
        assert.match(run.stdout, /^\[node-b:1\] rank 1\/2 /m);
    });
    it("a remote rank's failure stops every rank on every host, and nothing is left", async () => {
        const pidDir = mkdtempSync(join(scratch, "pids-"));
        const hosts = hostfile("node-a slots=1\nnode-b slots=2\n");
        const run = await runMixz(["launch", "-H", hosts, "--master-addr", "127.0.0.1", "--master-port", "0", "--heartbeat-interval", "0.25", "--grace-period", "1",
            misbehave, "--mode", "exit3", "--rank", "2", "--pid-dir", pidDir], {env: env()});
        assert.equal(run.code, 3, run.stderr);
        assert.match(run.stderr, /host {6}: node-b\n {2}rank {6}: 2 \(local_rank: 1\)\n {2}exitcode {2}: 3/);
        const pids = readdirSync(pidDir).map((name) => Number(readFileSync(join(pidDir, name), "utf8")));
        assert.equal(pids.length, 6);
        assert.deepEqual(await waitGone(pids, 8000), []);
    });
    it("SIGKILL of the launcher: remote daemons see their channel close and end themselves", async () => {
        const pidDir = mkdtempSync(join(scratch, "pids-"));
        const hosts = hostfile("node-a slots=1\nnode-b slots=1\n");
        const handle = startMixz(["launch", "-H", hosts, "--master-addr", "127.0.0.1", "--master-port", "0", misbehave, "--mode", "sleep", "--pid-dir", pidDir], {env: env()});
        await handle.waitFor(/(rank \d started[\s\S]*){2}/);
        handle.child.kill("SIGKILL");
        await handle.done;
        const pids = readdirSync(pidDir).map((name) => Number(readFileSync(join(pidDir, name), "utf8")));
        assert.deepEqual(await waitGone(pids, 8000), []);
    });
});

describe("many ranks on one host", () => {
    it("10 ranks on a host whose sshd allows 10 sessions per connection (stock MaxSessions)", async () => {
        const stock = await SshServerFixture.start({maxSessions: 10});
        try {
            const hosts = hostfile("node-a slots=10\n");
            const run = await runMixz(["launch", "-H", hosts, "--master-addr", "127.0.0.1", "--master-port", "0", rankWorld], {env: {HOME: stock.home, SSH_AUTH_SOCK: ""}});
            assert.equal(run.code, 0, run.stderr);
            assert.equal(run.stdout.match(/^\[node-a:\d+\] rank \d+\/10 .* ok /gm)?.length, 10, run.stdout);
        } finally {
            await stock.stop();
        }
    });
});

describe("SSH failures name the host and the cause; nothing starts", () => {
    const cases: Array<[string, string, string[], RegExp]> = [
        ["wrong key", "node-wrong-key slots=1\n", [], /node-wrong-key.*authentication failed/],
        ["unreachable port", "node-down slots=1\n", [], /node-down.*connection refused/],
        ["unknown host name", "no-such-host.invalid slots=1\n", [], /no-such-host\.invalid.*cannot resolve host name/]
    ];
    for (const [name, text, extra, pattern] of cases) {
        it(name, async () => {
            const run = await runMixz(["launch", "-H", hostfile(`node-a slots=1\n${text}`), "--master-port", "0", ...extra, rankWorld], {env: env()});
            assert.equal(run.code, 1, run.stderr);
            assert.match(run.stderr, pattern);
            assert.doesNotMatch(run.stdout, /rank \d\/\d/, "no rank ran");
        });
    }
    it("an unknown host key is refused unless --ssh-accept-new-host-keys", async () => {
        const knownHosts = join(sshd.home, ".ssh", "known_hosts");
        const saved = readFileSync(knownHosts, "utf8");
        try {
            writeFileSync(knownHosts, "");
            const refused = await runMixz(["launch", "-H", hostfile("node-a slots=1\n"), "--master-port", "0", rankWorld], {env: env()});
            assert.equal(refused.code, 1, refused.stderr);
            assert.match(refused.stderr, /node-a.*unknown host key \(ssh-ed25519 SHA256:/);
            const accepted = await runMixz(["launch", "-H", hostfile("node-a slots=1\n"), "--master-addr", "127.0.0.1", "--master-port", "0", "--ssh-accept-new-host-keys", rankWorld], {env: env()});
            assert.equal(accepted.code, 0, accepted.stderr);
            assert.match(readFileSync(knownHosts, "utf8"), new RegExp(`\\[127\\.0\\.0\\.1\\]:${sshd.port} ssh-ed25519 `));
        } finally {
            writeFileSync(knownHosts, saved);
        }
    });
});

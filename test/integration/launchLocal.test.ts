// mixz launch with local ranks, end to end: real launcher, coordinator, daemons and scripts.
import assert from "node:assert/strict";
import {mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";
import {fixture, runMixz} from "../helpers/mixzProcess.js";

const script = fixture("integration/fixtures/rankWorld.ts");
const scratch = mkdtempSync(join(tmpdir(), "mixz-launch-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

describe("mixz launch --nproc N", () => {
    for (const n of [1, 2, 4]) {
        it(`${n} rank(s) meet through the store and barriers and exit 0`, async () => {
            const run = await runMixz(["launch", "--nproc", String(n), "--master-port", "0", script, "a b", "--flag"]);
            assert.equal(run.code, 0, run.stderr);
            for (let rank = 0; rank < n; rank++) {
                assert.match(run.stdout, new RegExp(`^\\[localhost:${rank}\\] rank ${rank}/${n} local ${rank}/${n} node 0/1 ok args=\\["a b","--flag"\\]`, "m"));
            }
            assert.match(run.stdout, /^\[mixz\] step 1 \| loss \d\.\d{4} \| \d+ tokens\/s \| slowest rank \d+ \(\d+ ms\)$/m);
        });
    }
    it("a rank's exit code becomes the launcher's, with a failure summary", async () => {
        const run = await runMixz(["launch", "--nproc", "3", "--master-port", "0", script, "--exit-rank", "1", "--exit-code", "3"]);
        assert.equal(run.code, 3, run.stderr);
        assert.match(run.stderr, /mixz launch FAILED/);
        assert.match(run.stderr, /Root cause \(first observed failure\):\n(.*\n)*? {2}rank {6}: 1 \(local_rank: 1\)\n {2}exitcode {2}: 3 \(pid: \d+\)/);
        assert.match(run.stderr, /\| rank 1: exiting with 3 as asked/);
    });
});

describe("environment for ranks", () => {
    it("env files from the working directory reach the ranks", async () => {
        const dir = mkdtempSync(join(scratch, "cwd-"));
        writeFileSync(join(dir, ".mixz_env"), "# comment\n\nMIXZ_TEST_FORWARD=from-file=yes\n");
        const run = await runMixz(["launch", "--nproc", "2", "--master-port", "0", script], {cwd: dir});
        assert.equal(run.code, 0, run.stderr);
        assert.equal(run.stdout.match(/env=from-file=yes$/gm)?.length, 2, run.stdout);
    });
    it("a bad env file line is a user error naming file and line", async () => {
        const dir = mkdtempSync(join(scratch, "cwd-"));
        writeFileSync(join(dir, ".deepspeed_env"), "GOOD=1\nnot a line\n");
        const run = await runMixz(["launch", "--nproc", "1", script], {cwd: dir});
        assert.equal(run.code, 2);
        assert.match(run.stderr, /\.deepspeed_env:2: expected KEY=VALUE, got 'not a line'/);
    });
});

describe("logs", () => {
    it("--log-dir writes one file per rank; --console-ranks filters the console only", async () => {
        const logDir = join(scratch, "logs");
        const run = await runMixz(["launch", "--nproc", "3", "--master-port", "0", "--log-dir", logDir, "--console-ranks", "1", script]);
        assert.equal(run.code, 0, run.stderr);
        assert.deepEqual(readdirSync(logDir).sort(), ["rank-0.log", "rank-1.log", "rank-2.log"]);
        assert.match(readFileSync(join(logDir, "rank-2.log"), "utf8"), /^rank 2\/3 /m);
        assert.match(run.stdout, /^\[localhost:1\] rank 1\/3/m);
        assert.doesNotMatch(run.stdout, /^\[localhost:[02]\]/m);
    });
});

describe("coordinator port", () => {
    it("a port in use is a clear error naming the address, exit 2", async () => {
        const {createServer} = await import("node:net");
        const server = createServer();
        await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
        const port = (server.address() as {port: number}).port;
        try {
            const run = await runMixz(["launch", "--nproc", "1", "--master-port", String(port), script]);
            assert.equal(run.code, 2, run.stderr);
            assert.match(run.stderr, new RegExp(`127\\.0\\.0\\.1:${port}.*address already in use`));
        } finally {
            server.close();
        }
    });
});

describe("scripts wherever they live", () => {
    it("a .ts file with import syntax in a folder without package.json, and a CommonJS .js requiring mixz", async () => {
        const dir = mkdtempSync(join(tmpdir(), "mixz-plain-"));
        try {
            // Top-level await in a .ts file outside any "type": "module" package.
            writeFileSync(join(dir, "esm.ts"), 'import {runtime} from "mixz";\nimport {sep} from "node:path";\nawait runtime.store.barrier("tla", 20_000);\nconst n: number = runtime.worldSize;\nconsole.log(`esm ${runtime.rank}/${n} ${sep}`);\n');
            writeFileSync(join(dir, "plain.js"), 'const {runtime} = require("mixz");\nconsole.log(`cjs ${runtime.rank}/${runtime.worldSize}`);\n');
            const esm = await runMixz(["launch", "--nproc", "2", "--master-port", "0", "esm.ts"], {cwd: dir});
            assert.equal(esm.code, 0, esm.stderr);
            assert.match(esm.stdout, /^\[localhost:1\] esm 1\/2 \/$/m);
            const cjs = await runMixz(["launch", "--nproc", "2", "--master-port", "0", "plain.js"], {cwd: dir});
            assert.equal(cjs.code, 0, cjs.stderr);
            assert.match(cjs.stdout, /^\[localhost:0\] cjs 0\/2$/m);
        } finally {
            rmSync(dir, {recursive: true, force: true});
        }
    });
});

describe("launch mistakes exit 2 before anything starts", () => {
    const cases: Array<[string, string[], RegExp]> = [
        ["a script that does not exist", ["--nproc", "1", "no-such-script.ts"], /no-such-script\.ts: <script>: no such file/],
        ["a directory as the script", ["--nproc", "1", "test"], /test: <script>: is not a file/],
        ["--log-dir naming a file", ["--nproc", "1", "--log-dir", "package.json", script], /--log-dir: .*package\.json exists and is not a directory/],
        ["--console-ranks outside the world", ["--nproc", "2", "--console-ranks", "5", script], /--console-ranks: rank 5 is not in this world of 2 rank\(s\)/],
        ["a bad seconds value", ["--nproc", "1", "--heartbeat-interval", "0", script], /--heartbeat-interval: '0' is not a number of seconds/]
    ];
    for (const [name, args, pattern] of cases) {
        it(name, async () => {
            const run = await runMixz(["launch", ...args]);
            assert.equal(run.code, 2, run.stderr);
            assert.match(run.stderr, pattern);
            assert.equal(run.stdout, "");
        });
    }
    it("an unknown MIXZ_LOG_LEVEL", async () => {
        const run = await runMixz(["launch", "--nproc", "1", script], {env: {MIXZ_LOG_LEVEL: "loud"}});
        assert.equal(run.code, 2, run.stderr);
        assert.match(run.stderr, /MIXZ_LOG_LEVEL: 'loud' is not one of trace, debug, info, warn, error, fatal, silent/);
    });
});

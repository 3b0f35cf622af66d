/**
 * A real OpenSSH server for the SSH tests (Debian's openssh-server; scripts/bootstrap and the CI
 * install it). It listens on 127.0.0.1 and 127.0.0.2 at one free high port, so that two host names
 * of a plan reach it as two nodes, with:
 * - its own host key (ed25519) and its own authorized_keys holding a generated user key;
 * - `UsePAM no`, `StrictModes no` (the temp dir is not owned the way sshd wants for ~/.ssh),
 *   `PermitRootLogin prohibit-password` (tests run as root in CI), password logins off;
 * - `sshd -D -e`: the listener stays in the foreground as our child, its log goes to `logPath`.
 *
 * And a test HOME (`home`) for the client side:
 * - `.ssh/id_ed25519` (authorized), `.ssh/id_wrong` (not authorized), `.ssh/id_passphrase`
 *   (authorized, but protected by a passphrase);
 * - `.ssh/config` with aliases `node-a` → 127.0.0.1, `node-b` → 127.0.0.2 (Port, User,
 *   IdentityFile), `node-wrong-key` (authorized user, wrong key) and `node-down` (a closed port);
 * - `.ssh/known_hosts` with the server key for `[127.0.0.1]:PORT` and `[127.0.0.2]:PORT`. Like
 *   OpenSSH, mixz looks keys up by HostName (or HostKeyAlias), never by the alias, so the aliases
 *   need no lines of their own;
 * - `otherHostKey`: a second host key blob that is NOT the server's, for "changed key" tests.
 *
 * `stop()` ends sshd and every process it started (per-connection sshd children live in their own
 * sessions and survive the listener, so the fixture collects the listener's descendants by parent
 * pid before killing it: never by name), then removes the temp dir.
 */
import {spawn, spawnSync, type ChildProcess} from "node:child_process";
import {closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync} from "node:fs";
import {connect, createServer} from "node:net";
import {tmpdir, userInfo} from "node:os";
import {join} from "node:path";
import {isAlive} from "../helpers/mixzProcess.js";

const kSshd = "/usr/sbin/sshd";
const kSshKeygen = "/usr/bin/ssh-keygen";
export const kLoopbackAddresses = ["127.0.0.1", "127.0.0.2"] as const;

export interface SshServerFixtureOptions {
    /** How long to wait for the port to accept connections (default 10 s). */
    readonly startTimeoutMs?: number;
    /** sshd's MaxSessions (channels per connection; OpenSSH's default is 10). */
    readonly maxSessions?: number;
    /** The sshd binary (default /usr/sbin/sshd; sshd must be started by absolute path). */
    readonly sshdPath?: string;
}

export class SshServerFixture {
    /** The temp dir holding everything (server and client side). */
    readonly dir: string;
    readonly port: number;
    /** The test HOME: pass it as `homeDir` to resolveSshTarget. */
    readonly home: string;
    readonly configPath: string;
    readonly knownHostsPath: string;
    readonly userKeyPath: string;
    readonly wrongUserKeyPath: string;
    readonly passphraseKeyPath: string;
    readonly passphrase = "correct horse";
    /** The local user, who is also the remote user. */
    readonly user: string;
    /** The server's host key as an SSH blob, its `ssh-keygen -l` fingerprint and its known_hosts type. */
    readonly hostKey: Buffer;
    readonly hostKeyFingerprint: string;
    /** A host key that is not the server's. */
    readonly otherHostKey: Buffer;
    readonly logPath: string;
    readonly #sshd: ChildProcess;
    #stopped = false;

    private constructor(fields: {dir: string; port: number; hostKey: Buffer; hostKeyFingerprint: string; otherHostKey: Buffer; user: string; sshd: ChildProcess}) {
        this.dir = fields.dir;
        this.port = fields.port;
        this.home = join(fields.dir, "home");
        this.configPath = join(this.home, ".ssh", "config");
        this.knownHostsPath = join(this.home, ".ssh", "known_hosts");
        this.userKeyPath = join(this.home, ".ssh", "id_ed25519");
        this.wrongUserKeyPath = join(this.home, ".ssh", "id_wrong");
        this.passphraseKeyPath = join(this.home, ".ssh", "id_passphrase");
        this.user = fields.user;
        this.hostKey = fields.hostKey;
        this.hostKeyFingerprint = fields.hostKeyFingerprint;
        this.otherHostKey = fields.otherHostKey;
        this.logPath = join(fields.dir, "sshd.log");
        this.#sshd = fields.sshd;
    }

    get pid(): number {
        return this.#sshd.pid!;
    }

    /** The known_hosts line the fixture wrote for both addresses. */
    knownHostsLine(key = this.hostKey): string {
        return `${kLoopbackAddresses.map((address) => `[${address}]:${this.port}`).join(",")} ssh-ed25519 ${key.toString("base64")}\n`;
    }

    /** sshd's log so far (attach it to failing assertions). */
    log(): string {
        try {
            return readFileSync(this.logPath, "utf8");
        } catch {
            return "";
        }
    }

    static async start(options: SshServerFixtureOptions = {}): Promise<SshServerFixture> {
        for (const tool of [options.sshdPath ?? kSshd, kSshKeygen]) {
            if (!existsSync(tool)) {
                throw new Error(`${tool} is missing: the SSH tests need Debian's openssh-server (and openssh-client); run scripts/bootstrap (the CI installs openssh-server)`);
            }
        }
        // sshd refuses to start without its privilege separation directory.
        if (!existsSync("/run/sshd")) {
            try {
                mkdirSync("/run/sshd", {recursive: true, mode: 0o755});
            } catch (error) {
                throw new Error(`sshd needs /run/sshd (its privilege separation directory) and it cannot be created here (${(error as NodeJS.ErrnoException).code}); run the SSH tests as root, as the CI does`);
            }
        }

        const dir = mkdtempSync(join(tmpdir(), "mixz-sshd-"));
        try {
            return await SshServerFixture.#startIn(dir, options);
        } catch (error) {
            rmSync(dir, {recursive: true, force: true});
            throw error;
        }
    }

    static async #startIn(dir: string, options: SshServerFixtureOptions): Promise<SshServerFixture> {
        const home = join(dir, "home");
        const ssh = join(home, ".ssh");
        mkdirSync(ssh, {recursive: true, mode: 0o700});
        const user = userInfo().username;

        const hostKeyPath = join(dir, "ssh_host_ed25519_key");
        keygen(hostKeyPath, "mixz-test-host", "");
        keygen(join(dir, "other_host_key"), "mixz-test-other-host", "");
        keygen(join(ssh, "id_ed25519"), "mixz-test-user", "");
        keygen(join(ssh, "id_wrong"), "mixz-test-wrong-user", "");
        keygen(join(ssh, "id_passphrase"), "mixz-test-passphrase-user", "correct horse");
        writeFileSync(
            join(dir, "authorized_keys"),
            readFileSync(join(ssh, "id_ed25519.pub"), "utf8") + readFileSync(join(ssh, "id_passphrase.pub"), "utf8"),
            {mode: 0o600}
        );
        const hostKey = publicKeyBlob(`${hostKeyPath}.pub`);
        const otherHostKey = publicKeyBlob(join(dir, "other_host_key.pub"));
        const fingerprint = spawnSync(kSshKeygen, ["-l", "-E", "sha256", "-f", `${hostKeyPath}.pub`], {encoding: "utf8"}).stdout.split(/\s+/)[1] ?? "";

        let lastError: unknown;
        for (let attempt = 0; attempt < 3; attempt++) {
            const port = await freePort();
            writeFileSync(join(dir, "sshd_config"), sshdConfig(dir, port, options.maxSessions ?? 64));
            const logFd = openSync(join(dir, "sshd.log"), "w");
            const sshd = spawn(options.sshdPath ?? kSshd, ["-D", "-e", "-f", join(dir, "sshd_config")], {stdio: ["ignore", logFd, logFd]});
            closeSync(logFd);
            const fixture = new SshServerFixture({dir, port, hostKey, hostKeyFingerprint: fingerprint, otherHostKey, user, sshd});
            try {
                await fixture.#waitUntilListening(options.startTimeoutMs ?? 10_000);
            } catch (error) {
                lastError = error;
                await fixture.#killServer();
                if (/Address already in use/.test(fixture.log())) continue; // lost the race for the port
                throw error;
            }
            fixture.#writeClientHome();
            return fixture;
        }
        throw lastError;
    }

    #writeClientHome(): void {
        const ssh = join(this.home, ".ssh");
        const block = (alias: string, hostName: string, port: number, key: string): string =>
            `Host ${alias}\n    HostName ${hostName}\n    Port ${port}\n    User ${this.user}\n    IdentityFile ~/.ssh/${key}\n\n`;
        writeFileSync(
            this.configPath,
            "# Written by test/ssh/SshServerFixture.ts\n" +
                block("node-a", "127.0.0.1", this.port, "id_ed25519") +
                block("node-b", "127.0.0.2", this.port, "id_ed25519") +
                block("node-wrong-key", "127.0.0.1", this.port, "id_wrong") +
                block("node-down", "127.0.0.1", 1, "id_ed25519"),
            {mode: 0o600}
        );
        writeFileSync(join(ssh, "known_hosts"), this.knownHostsLine(), {mode: 0o600});
    }

    async #waitUntilListening(timeoutMs: number): Promise<void> {
        const deadline = Date.now() + timeoutMs;
        const exited = new Promise<never>((_, reject) => {
            this.#sshd.once("exit", (code, signal) => reject(new Error(`sshd exited (${code ?? signal}) while starting:\n${this.log()}`)));
        });
        exited.catch(() => {});
        for (const address of kLoopbackAddresses) {
            for (;;) {
                const ok = await Promise.race([canConnect(address, this.port), exited]);
                if (ok) break;
                if (Date.now() > deadline) throw new Error(`sshd did not accept connections on ${address}:${this.port} within ${timeoutMs} ms:\n${this.log()}`);
                await new Promise((resolve) => setTimeout(resolve, 50));
            }
        }
    }

    /** Stops sshd and every process it started, then removes the temp dir. Safe to call twice. */
    async stop(): Promise<void> {
        if (this.#stopped) return;
        this.#stopped = true;
        try {
            await this.#killServer();
        } finally {
            rmSync(this.dir, {recursive: true, force: true});
        }
    }

    async [Symbol.asyncDispose](): Promise<void> {
        await this.stop();
    }

    /** Pids of sshd's descendants still alive (connection handlers and the commands they run). */
    descendants(): number[] {
        return descendantsOf(this.pid);
    }

    async #killServer(): Promise<void> {
        const sshd = this.#sshd;
        // Snapshot first: once the listener dies its children are re-parented and can no longer be found by parent pid.
        const children = descendantsOf(sshd.pid!);
        for (const pid of children) signal(pid, "SIGKILL");
        if (sshd.exitCode === null && sshd.signalCode === null) {
            const exited = new Promise<void>((resolve) => sshd.once("exit", () => resolve()));
            sshd.kill("SIGTERM");
            const killer = setTimeout(() => sshd.kill("SIGKILL"), 2_000);
            await exited;
            clearTimeout(killer);
        }
        // Wait until the killed children are really gone (zombies count as gone: init reaps them).
        const deadline = Date.now() + 5_000;
        while (children.some(isAlive) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    }
}

function keygen(path: string, comment: string, passphrase: string): void {
    const result = spawnSync(kSshKeygen, ["-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", path], {encoding: "utf8"});
    if (result.status !== 0) throw new Error(`ssh-keygen failed for ${path}: ${result.stderr}`);
}

/** The base64 field of an OpenSSH public key file, decoded: the key blob a server presents. */
function publicKeyBlob(path: string): Buffer {
    const field = readFileSync(path, "utf8").trim().split(/\s+/)[1];
    if (field === undefined) throw new Error(`${path}: not a public key`);
    return Buffer.from(field, "base64");
}

function sshdConfig(dir: string, port: number, maxSessions: number): string {
    return [
        "# Written by test/ssh/SshServerFixture.ts",
        `Port ${port}`,
        ...kLoopbackAddresses.map((address) => `ListenAddress ${address}`),
        `HostKey ${join(dir, "ssh_host_ed25519_key")}`,
        `PidFile ${join(dir, "sshd.pid")}`,
        `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "AllowAgentForwarding no",
        "PrintMotd no",
        "PrintLastLog no",
        "UseDNS no",
        `MaxSessions ${maxSessions}`,
        "MaxStartups 100:30:200",
        "LoginGraceTime 30",
        "LogLevel VERBOSE",
        ""
    ].join("\n");
}

async function freePort(): Promise<number> {
    // A port free on 127.0.0.1 is checked on 127.0.0.2 too; sshd may still lose a race (retried by the caller).
    for (;;) {
        const port = await new Promise<number>((resolve, reject) => {
            const server = createServer();
            server.once("error", reject);
            server.listen(0, "127.0.0.1", () => {
                const address = server.address();
                server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0));
            });
        });
        const other = await new Promise<boolean>((resolve) => {
            const server = createServer();
            server.once("error", () => resolve(false));
            server.listen(port, "127.0.0.2", () => server.close(() => resolve(true)));
        });
        if (other) return port;
    }
}

function canConnect(host: string, port: number): Promise<boolean> {
    return new Promise((resolve) => {
        const socket = connect({host, port});
        socket.once("connect", () => {
            socket.destroy();
            resolve(true);
        });
        socket.once("error", () => resolve(false));
    });
}

/** Descendants of `root` by parent pid, from /proc (children before grandchildren). */
function descendantsOf(root: number): number[] {
    const parents = new Map<number, number[]>();
    for (const name of readdirSync("/proc")) {
        if (!/^\d+$/.test(name)) continue;
        let stat: string;
        try {
            stat = readFileSync(`/proc/${name}/stat`, "utf8");
        } catch {
            continue; // exited meanwhile
        }
        // "pid (comm) state ppid …": comm may contain spaces and parentheses, so parse after the last ')'.
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        const ppid = Number(fields[1]);
        const list = parents.get(ppid) ?? [];
        list.push(Number(name));
        parents.set(ppid, list);
    }
    const out: number[] = [];
    const queue = [root];
    while (queue.length > 0) {
        for (const child of parents.get(queue.shift()!) ?? []) {
            out.push(child);
            queue.push(child);
        }
    }
    return out;
}

function signal(pid: number, name: NodeJS.Signals): void {
    try {
        process.kill(pid, name);
    } catch {
        // already gone
    }
}

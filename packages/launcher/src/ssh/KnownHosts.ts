import {createHash, createHmac, timingSafeEqual} from "node:crypto";
import {closeSync, mkdirSync, openSync, readFileSync, writeSync, fstatSync, readSync} from "node:fs";
import {dirname} from "node:path";
import type {HostKeyCheck} from "./api.js";

/**
 * OpenSSH's known_hosts (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"), read-only except for `append`.
 *
 * A line is `[marker] names keytype base64-key [comment]`:
 * - marker: `@revoked` (this key must never be accepted for these names) or `@cert-authority`
 *   (a CA for host certificates: mixz does not use host certificates, so these lines are ignored);
 * - names: a comma list of patterns (`*` and `?` wildcards, `!` negation) matched without regard to
 *   case, or one hashed name `|1|base64(salt)|base64(HMAC-SHA1(salt, name))` (HashKnownHosts);
 * - a name for a port other than 22 is written `[host]:port`, for port 22 just `host`.
 *
 * The host key is the SSH wire blob (string keytype, then the key's fields): what the server sends
 * and what ssh2's hostVerifier receives. Fingerprints are OpenSSH's `SHA256:` + unpadded base64.
 */

/** One usable line of a known_hosts file. */
export interface KnownHostsEntry {
    readonly file: string;
    /** 1-based. */
    readonly line: number;
    readonly marker: "revoked" | "cert-authority" | null;
    /** The names field split at commas (hashed tokens kept as written). */
    readonly names: readonly string[];
    readonly keyType: string;
    readonly key: Buffer;
}

/** A line that was skipped, and why (shown in debug logs; OpenSSH skips such lines too). */
export interface KnownHostsProblem {
    readonly file: string;
    readonly line: number;
    readonly message: string;
}

/** The known_hosts name of a host: `[name]:port`, or the bare name for port 22. */
export function knownHostsName(hostName: string, port: number): string {
    return port === 22 ? hostName : `[${hostName}]:${port}`;
}

/** `SHA256:…` of a host key blob, as `ssh-keygen -l` and OpenSSH's prompts print it. */
export function hostKeyFingerprint(key: Buffer): string {
    return `SHA256:${createHash("sha256").update(key).digest("base64").replace(/=+$/, "")}`;
}

/** The key type at the start of a key blob (`ssh-ed25519`), or null when the blob is malformed. */
export function hostKeyType(key: Buffer): string | null {
    if (key.length < 4) return null;
    const length = key.readUInt32BE(0);
    if (length === 0 || length > 64 || 4 + length > key.length) return null;
    const type = key.subarray(4, 4 + length).toString("latin1");
    return /^[\x21-\x7e]+$/.test(type) ? type : null;
}

export class KnownHosts {
    readonly files: readonly string[];
    readonly problems: KnownHostsProblem[] = [];
    readonly #entries: KnownHostsEntry[] = [];

    private constructor(files: readonly string[]) {
        this.files = files;
    }

    /** Reads the files in order; a missing file is an empty one (a first connection has none). */
    static load(files: readonly string[]): KnownHosts {
        const knownHosts = new KnownHosts(files);
        for (const file of files) {
            let text: string;
            try {
                text = readFileSync(file, "utf8");
            } catch (error) {
                if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
                throw error;
            }
            knownHosts.#addText(text, file);
        }
        return knownHosts;
    }

    /** Parses known_hosts text (tests, and files read elsewhere). `append` writes to `file`. */
    static parse(text: string, file = "known_hosts"): KnownHosts {
        const knownHosts = new KnownHosts([file]);
        knownHosts.#addText(text, file);
        return knownHosts;
    }

    get entries(): readonly KnownHostsEntry[] {
        return this.#entries;
    }

    /**
     * Checks the key a server presented for hostName:port. Precedence: a matching `@revoked` line
     * wins; then any line carrying exactly this key (several keys per host are allowed); then a line
     * for this host with another key of the same type (changed); else unknown.
     */
    check(hostName: string, port: number, key: Buffer): HostKeyCheck {
        const keyType = hostKeyType(key) ?? "unknown-key-type";
        const fingerprint = hostKeyFingerprint(key);
        const name = knownHostsName(hostName, port);
        let changed: KnownHostsEntry | undefined;
        let matched = false;
        for (const entry of this.#entries) {
            if (entry.marker === "cert-authority" || !namesMatch(entry.names, name)) continue;
            const same = entry.key.equals(key);
            if (entry.marker === "revoked") {
                if (same) return {status: "revoked", keyType, fingerprint, file: entry.file, line: entry.line};
                continue;
            }
            if (same) matched = true;
            else if (entry.keyType === keyType) changed ??= entry;
        }
        if (matched) return {status: "match", keyType, fingerprint};
        if (changed !== undefined) {
            return {status: "changed", keyType, fingerprint, file: changed.file, line: changed.line, expectedFingerprint: hostKeyFingerprint(changed.key)};
        }
        return {status: "unknown", keyType, fingerprint};
    }

    /** Key types known (not revoked, not CA) for hostName:port, in file order: the host key algorithms to ask the server for first. */
    keyTypesFor(hostName: string, port: number): string[] {
        const name = knownHostsName(hostName, port);
        const types: string[] = [];
        for (const entry of this.#entries) {
            if (entry.marker === null && namesMatch(entry.names, name) && !types.includes(entry.keyType)) types.push(entry.keyType);
        }
        return types;
    }

    /**
     * Records a host key, as `ssh -o StrictHostKeyChecking=accept-new` does: one plain line
     * `name keytype base64` appended to the first file. The file (mode 0600) and its directory
     * (0700) are created when missing.
     */
    append(hostName: string, port: number, key: Buffer): KnownHostsEntry {
        const file = this.files[0];
        if (file === undefined) throw new RangeError("known_hosts: no file to append to");
        if (hostName === "" || /[\s,#*?!|]/.test(hostName)) throw new RangeError(`known_hosts: cannot record host name ${JSON.stringify(hostName)}`);
        const keyType = hostKeyType(key);
        if (keyType === null) throw new RangeError("known_hosts: malformed host key");
        const name = knownHostsName(hostName.toLowerCase(), port);
        mkdirSync(dirname(file), {recursive: true, mode: 0o700});
        const fd = openSync(file, "a+", 0o600);
        let lineNumber: number;
        try {
            const {text, size} = readAll(fd);
            const separator = size > 0 && !text.endsWith("\n") ? "\n" : "";
            writeSync(fd, `${separator}${name} ${keyType} ${key.toString("base64")}\n`);
            lineNumber = (text.match(/\n/g)?.length ?? 0) + (separator === "" ? 1 : 2);
        } finally {
            closeSync(fd);
        }
        const entry: KnownHostsEntry = {file, line: lineNumber, marker: null, names: [name], keyType, key: Buffer.from(key)};
        this.#entries.push(entry);
        return entry;
    }

    #addText(text: string, file: string): void {
        const lines = text.split("\n");
        for (let index = 0; index < lines.length; index++) {
            const parsed = parseLine(lines[index]!, file, index + 1);
            if (parsed === null) continue;
            if ("message" in parsed) this.problems.push(parsed);
            else this.#entries.push(parsed);
        }
    }
}

function readAll(fd: number): {text: string; size: number} {
    const size = fstatSync(fd).size;
    const buffer = Buffer.alloc(size);
    let offset = 0;
    while (offset < size) {
        const read = readSync(fd, buffer, offset, size - offset, offset);
        if (read === 0) break;
        offset += read;
    }
    return {text: buffer.subarray(0, offset).toString("utf8"), size: offset};
}

function parseLine(raw: string, file: string, line: number): KnownHostsEntry | KnownHostsProblem | null {
    const text = raw.replace(/\r$/, "").trim();
    if (text === "" || text.startsWith("#")) return null;
    const fields = text.split(/\s+/);
    let marker: KnownHostsEntry["marker"] = null;
    if (fields[0]!.startsWith("@")) {
        const word = fields.shift()!;
        if (word === "@revoked") marker = "revoked";
        else if (word === "@cert-authority") marker = "cert-authority";
        else return {file, line, message: `unknown marker ${word}`};
    }
    const [names, keyType, base64] = fields;
    if (names === undefined || keyType === undefined || base64 === undefined) return {file, line, message: "expected: names keytype key"};
    if (/^\d+$/.test(keyType)) return {file, line, message: "SSH protocol 1 key (not supported)"};
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(base64)) return {file, line, message: "key is not base64"};
    const key = Buffer.from(base64, "base64");
    const embedded = hostKeyType(key);
    if (embedded !== keyType) return {file, line, message: `key type ${keyType} does not match the key (${embedded ?? "malformed"})`};
    return {file, line, marker, names: names.split(","), keyType, key};
}

/**
 * OpenSSH's match_hostname_list for one name: a negated pattern that matches excludes the line
 * whatever else matches; otherwise any matching pattern (or hashed token) includes it.
 */
function namesMatch(patterns: readonly string[], name: string): boolean {
    const lower = name.toLowerCase();
    let positive = false;
    for (const pattern of patterns) {
        if (pattern.startsWith("|")) {
            if (hashedNameMatches(pattern, lower)) positive = true;
            continue;
        }
        const negated = pattern.startsWith("!");
        const body = (negated ? pattern.slice(1) : pattern).toLowerCase();
        if (!globMatch(body, lower)) continue;
        if (negated) return false;
        positive = true;
    }
    return positive;
}

/** `|1|salt|hash`: HMAC-SHA1 keyed with the salt over the lower-cased name (`[host]:port` included), as ssh hashes it. */
function hashedNameMatches(token: string, name: string): boolean {
    const parts = token.split("|");
    if (parts.length !== 4 || parts[1] !== "1") return false;
    const salt = Buffer.from(parts[2]!, "base64");
    const hash = Buffer.from(parts[3]!, "base64");
    if (salt.length !== 20 || hash.length !== 20) return false;
    const computed = createHmac("sha1", salt).update(name).digest();
    return timingSafeEqual(computed, hash);
}

/** `*` any run of characters, `?` one character; everything else literal (so `[host]:port` is literal). */
function globMatch(pattern: string, text: string): boolean {
    let p = 0;
    let t = 0;
    let star = -1;
    let resume = 0;
    while (t < text.length) {
        const c = pattern[p];
        if (c === "*") {
            star = p++;
            resume = t;
        } else if (c !== undefined && (c === "?" || c === text[t])) {
            p++;
            t++;
        } else if (star >= 0) {
            p = star + 1;
            t = ++resume;
        } else {
            return false;
        }
    }
    while (pattern[p] === "*") p++;
    return p === pattern.length;
}

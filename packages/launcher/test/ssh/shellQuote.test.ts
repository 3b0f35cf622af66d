// shellQuote and buildRemoteCommand, checked by handing their output to real POSIX shells (the
// remote side runs `$SHELL -c <command>`): every word must come back byte for byte.
import assert from "node:assert/strict";
import {spawnSync} from "node:child_process";
import {existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, describe, it} from "node:test";
import {buildRemoteCommand, shellQuote, shellQuoteArgv} from "../../src/ssh/index.js";

/** POSIX shells present here (dash is Debian's /bin/sh), each once. */
const shells = [...new Set(["/bin/sh", "/bin/dash", "/bin/bash", "/usr/bin/zsh", "/bin/ksh", "/bin/mksh"].filter((shell) => existsSync(shell)).map((shell) => realpathSync(shell)))];

const nasty: Array<[string, string]> = [
    ["empty string", ""],
    ["plain word", "hello"],
    ["spaces", "a b  c"],
    ["leading and trailing spaces", "  padded  "],
    ["tab", "a\tb"],
    ["single quote", "it's"],
    ["only single quotes", "'''"],
    ["quote at both ends", "'x'"],
    ["double quotes", 'say "hi"'],
    ["mixed quotes", `'"'"'`],
    ["dollar variable", "$HOME"],
    ["dollar braces", "${PATH:-x}"],
    ["command substitution", "$(echo pwned)"],
    ["backticks", "`echo pwned`"],
    ["backslashes", "a\\b\\\\c\\"],
    ["backslash before quote", "\\'"],
    ["backslash n literal", "\\n"],
    ["newline", "line1\nline2"],
    ["trailing newline", "x\n"],
    ["only newlines", "\n\n"],
    ["carriage return", "a\r\nb"],
    ["glob star", "*"],
    ["glob pattern", "*.ts ?[ab]"],
    ["semicolon", "a; echo pwned"],
    ["ampersand and pipe", "a && b || c | d &"],
    ["redirections", "> /tmp/x < /etc/passwd 2>&1"],
    ["comment", "# not a comment"],
    ["tilde", "~"],
    ["tilde path", "~root/x"],
    ["history bang", "!!"],
    ["leading dash", "-rf"],
    ["double dash", "--"],
    ["equals", "A=B"],
    ["braces", "{a,b}"],
    ["parentheses", "(subshell)"],
    ["unicode", "héllo wörld 日本語 🚀"],
    ["unicode quotes", "‘curly’ “double”"],
    ["control characters", "\u0001\u0007\u001b[31m"],
    ["percent", "%s %d %%"],
    ["long", "x".repeat(10_000)]
];

/** Runs `printf '%s\0' <quoted words>` in `shell` and splits the output at NUL. */
function roundTrip(shell: string, words: readonly string[]): string[] {
    const result = spawnSync(shell, ["-c", `printf '%s\\0' ${shellQuoteArgv(words)}`], {encoding: "utf8"});
    assert.equal(result.status, 0, result.stderr);
    const parts = result.stdout.split("\0");
    assert.equal(parts.pop(), "");
    return parts;
}

describe("shellQuote", () => {
    it("wraps every word in single quotes, even safe ones", () => {
        assert.equal(shellQuote("abc"), "'abc'");
        assert.equal(shellQuote(""), "''");
        assert.equal(shellQuote("it's"), `'it'\\''s'`);
        assert.equal(shellQuoteArgv(["a", "b c"]), "'a' 'b c'");
    });
    it("rejects NUL, which no command line can carry", () => {
        assert.throws(() => shellQuote("a\0b"), RangeError);
    });
    for (const shell of shells) {
        describe(`round-trips through ${shell}`, () => {
            for (const [name, word] of nasty) {
                it(name, () => assert.deepEqual(roundTrip(shell, [word]), [word]));
            }
            it("all of them as one argv", () => {
                const words = nasty.map(([, word]) => word);
                assert.deepEqual(roundTrip(shell, words), words);
            });
            it("random strings over a hostile alphabet", () => {
                const alphabet = ["'", '"', "\\", "$", "`", "\n", " ", "\t", "*", ";", "&", "|", "(", ")", "#", "!", "~", "a", "é", "🚀", "{", "}", "%", "-", "="];
                let seed = 12345;
                const next = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
                const words = Array.from({length: 200}, () => Array.from({length: next() % 12}, () => alphabet[next() % alphabet.length]!).join(""));
                assert.deepEqual(roundTrip(shell, words), words);
            });
        });
    }
});

describe("buildRemoteCommand", () => {
    const scratch = mkdtempSync(join(tmpdir(), "mixz-quote-"));
    after(() => rmSync(scratch, {recursive: true, force: true}));

    it("builds cd + exec env + argv, each word quoted", () => {
        assert.equal(
            buildRemoteCommand(["/usr/bin/node", "train.ts", "--lr", "1e-4"], {cwd: "/work/my job", env: {RANK: "0", MIXZ_X: "a'b"}}),
            `cd '/work/my job' && exec env 'RANK=0' 'MIXZ_X=a'\\''b' '/usr/bin/node' 'train.ts' '--lr' '1e-4'`
        );
    });

    it("runs argv exactly, in cwd, through real shells", () => {
        const cwd = join(scratch, `dir with 'quotes' "and" $dollars; and newline\nhere`);
        mkdirSync(cwd);
        const words = nasty.map(([, word]) => word);
        const argv = ["/bin/sh", "-c", `printf '%s\\0' "$PWD" "$@"`, "sh", ...words];
        for (const shell of shells) {
            const result = spawnSync(shell, ["-c", buildRemoteCommand(argv, {cwd, env: {}})], {encoding: "utf8"});
            assert.equal(result.status, 0, `${shell}: ${result.stderr}`);
            const parts = result.stdout.split("\0");
            assert.equal(parts.pop(), "");
            assert.deepEqual(parts, [realpathSync(cwd), ...words], shell);
        }
    });

    it("sets env values exactly, through real shells", () => {
        const env = {PLAIN: "x", SPACES: "a b", QUOTES: `it's "quoted"`, DOLLAR: "$HOME `id`", NEWLINE: "l1\nl2", EMPTY: "", EQUALS: "k=v=w", UNI: "日本", GLOB: "*"};
        for (const shell of shells) {
            const result = spawnSync(shell, ["-c", buildRemoteCommand(["/usr/bin/env", "-0"], {cwd: "/", env})], {encoding: "utf8"});
            assert.equal(result.status, 0, `${shell}: ${result.stderr}`);
            const seen = new Map(result.stdout.split("\0").filter((entry) => entry !== "").map((entry) => {
                const equals = entry.indexOf("=");
                return [entry.slice(0, equals), entry.slice(equals + 1)] as const;
            }));
            for (const [name, value] of Object.entries(env)) assert.equal(seen.get(name), value, `${shell}: ${name}`);
        }
    });

    it("fails (exit 1, nothing run) when cwd does not exist", () => {
        const marker = join(scratch, "ran");
        const command = buildRemoteCommand(["/usr/bin/touch", marker], {cwd: join(scratch, "missing"), env: {}});
        const result = spawnSync("/bin/sh", ["-c", command], {encoding: "utf8"});
        assert.notEqual(result.status, 0);
        assert.equal(existsSync(marker), false);
    });

    it("keeps a cwd that starts with '-' a directory, not an option", () => {
        const cwd = "-odd";
        mkdirSync(join(scratch, cwd));
        const result = spawnSync("/bin/sh", ["-c", buildRemoteCommand(["/bin/pwd"], {cwd, env: {}})], {encoding: "utf8", cwd: scratch});
        assert.equal(result.status, 0, result.stderr);
        assert.equal(result.stdout.trim(), join(realpathSync(scratch), cwd));
    });

    it("rejects environment names that are not portable", () => {
        for (const name of ["", "1X", "A-B", "A B", "A=B", "X;rm", "É", "A\nB"]) {
            assert.throws(() => buildRemoteCommand(["/bin/true"], {cwd: "/", env: {[name]: "v"}}), RangeError, JSON.stringify(name));
        }
        assert.doesNotThrow(() => buildRemoteCommand(["/bin/true"], {cwd: "/", env: {_a1: "v", A_B: "v"}}));
    });

    it("rejects an empty argv, a program env would misread, an empty cwd and NUL anywhere", () => {
        assert.throws(() => buildRemoteCommand([], {cwd: "/", env: {}}), RangeError);
        assert.throws(() => buildRemoteCommand([""], {cwd: "/", env: {}}), RangeError);
        assert.throws(() => buildRemoteCommand(["-i"], {cwd: "/", env: {}}), RangeError);
        assert.throws(() => buildRemoteCommand(["A=B"], {cwd: "/", env: {}}), RangeError);
        assert.throws(() => buildRemoteCommand(["/bin/true"], {cwd: "", env: {}}), RangeError);
        assert.throws(() => buildRemoteCommand(["/bin/true", "a\0"], {cwd: "/", env: {}}), RangeError);
        assert.throws(() => buildRemoteCommand(["/bin/true"], {cwd: "/", env: {A: "\0"}}), RangeError);
    });
});

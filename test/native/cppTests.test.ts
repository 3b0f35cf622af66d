// The standalone C++ test programs of the native core (native/test/*_test.cc), compiled and run
// here so that CI runs them. Each program's header comment holds its build line ("Build and run
// from the repository root: g++ … -o /tmp/… sources… -llib"); this test reads it, compiles at -O1
// (fast to build; the programs check results, not speed) into a temporary directory, all programs
// in parallel, then runs each with a timeout and expects exit status 0, showing the program's
// output otherwise. A program must also leave no shared-memory segment of its own behind
// (comm_test's segments are named /dev/shm/mixz-<job>-<rank>-<pid>-<random>; the pid tells them
// from those of other runs on the machine); any found are removed, so a failed run cannot fill
// /dev/shm.
import assert from "node:assert/strict";
import {spawn} from "node:child_process";
import {mkdtempSync, readFileSync, readdirSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {basename, dirname, join} from "node:path";
import {after, describe, it} from "node:test";

import {repoRoot} from "../helpers/mixzProcess.js";

const testDir = join(repoRoot, "native", "test");
const compileTimeoutMs = 300_000;
const runTimeoutMs = 300_000;

interface ProcessResult {
    readonly pid: number | undefined;
    readonly code: number | null;
    readonly signal: NodeJS.Signals | null;
    readonly output: string;
    readonly timedOut: boolean;
    readonly error?: Error;
}

/** Runs a command without a shell, collecting stdout and stderr together; SIGKILLs it after timeoutMs. */
function runProcess(command: string, args: readonly string[], timeoutMs: number): Promise<ProcessResult> {
    return new Promise((resolve) => {
        const child = spawn(command, args, {cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"]});
        let output = "";
        let timedOut = false;
        child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
        child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
        const timer = setTimeout(() => {
            timedOut = true;
            child.kill("SIGKILL");
        }, timeoutMs);
        child.once("error", (error) => {
            clearTimeout(timer);
            resolve({pid: child.pid, code: null, signal: null, output, timedOut, error});
        });
        child.once("close", (code, signal) => {
            clearTimeout(timer);
            resolve({pid: child.pid, code, signal, output, timedOut});
        });
    });
}

/** Expands a `*` in the last path component (the build lines' `native/src/quant/*.cc`), sorted. */
function expand(argument: string): string[] {
    if (!argument.includes("*")) return [argument];
    const directory = dirname(argument);
    const pattern = new RegExp(`^${basename(argument).replace(/[.+?^${}()|[\]\\]/g, "\\$&").replaceAll("*", ".*")}$`);
    const matches = readdirSync(join(repoRoot, directory)).filter((name) => pattern.test(name)).sort();
    if (matches.length === 0) throw new Error(`${argument} matches no file`);
    return matches.map((name) => join(directory, name));
}

/**
 * The g++ arguments of a program's header build line, with -O1 for the optimization level and
 * `binary` as the output.
 */
function buildArguments(source: string, binary: string): string[] {
    const lines = readFileSync(source, "utf8").split("\n");
    const start = lines.findIndex((line) => /^\/\/\s+g\+\+\s/.test(line));
    if (start < 0) throw new Error(`${source}: no "//   g++ …" build line in the header comment`);
    const indent = /^\/\/(\s+)/.exec(lines[start]!)![1]!.length;
    const words = lines[start]!.slice(2).trim().split(/\s+/);
    for (let i = start + 1; i < lines.length; i++) {
        const match = /^\/\/(\s+)(\S.*)$/.exec(lines[i]!);
        if (!match || match[1]!.length <= indent) break;
        words.push(...match[2]!.trim().split(/\s+/));
    }
    const args: string[] = [];
    for (let i = 1; i < words.length; i++) {
        const word = words[i]!;
        if (word === "-o") {
            args.push("-o", binary);
            i++;
        } else if (/^-O\d$/.test(word)) {
            args.push("-O1");
        } else {
            args.push(...expand(word));
        }
    }
    assert.ok(args.includes("-o"), `${source}: the build line has no -o`);
    return args;
}

function shmSegmentsOf(pid: number): string[] {
    try {
        return readdirSync("/dev/shm").filter((name) => name.startsWith("mixz-") && name.includes(`-${pid}-`));
    } catch {
        return [];
    }
}

const programs = readdirSync(testDir)
    .filter((name) => name.endsWith("_test.cc"))
    .sort();
const scratch = mkdtempSync(join(tmpdir(), "mixz-cpp-tests-"));
after(() => rmSync(scratch, {recursive: true, force: true}));

// Every compilation starts now, in parallel; each test waits for its own. The promises never
// reject (failures are results), so none goes unhandled while another test runs.
const builds = new Map(
    programs.map((name) => {
        const binary = join(scratch, name.replace(/\.cc$/, ""));
        let args: string[];
        try {
            args = buildArguments(join(testDir, name), binary);
        } catch (error) {
            const result: ProcessResult = {pid: undefined, code: null, signal: null, output: String(error), timedOut: false};
            return [name, Promise.resolve({binary, args: [] as string[], result})];
        }
        return [name, runProcess("g++", args, compileTimeoutMs).then((result) => ({binary, args, result}))];
    })
);

describe("native C++ test programs", () => {
    it("finds the programs", () => {
        for (const expected of ["comm_test.cc", "model_test.cc", "quant_test.cc"]) {
            assert.ok(programs.includes(expected), `native/test/${expected} is missing`);
        }
    });

    for (const name of programs) {
        it(name, {timeout: compileTimeoutMs + runTimeoutMs + 10_000}, async () => {
            const build = await builds.get(name)!;
            const compiled = build.result;
            assert.ok(
                compiled.code === 0,
                `g++ ${build.args.join(" ")}\n${compiled.timedOut ? "timed out" : `exit ${compiled.code ?? compiled.signal}`}` +
                    `${compiled.error ? ` (${compiled.error.message})` : ""}\n${compiled.output}`
            );
            const run = await runProcess(build.binary, [], runTimeoutMs);
            const leftovers = run.pid === undefined ? [] : shmSegmentsOf(run.pid);
            for (const segment of leftovers) rmSync(join("/dev/shm", segment), {force: true});
            assert.ok(
                run.code === 0,
                `${name}: ${run.timedOut ? `timed out after ${runTimeoutMs / 1000} s` : `exit ${run.code ?? run.signal}`}\n${run.output}`
            );
            assert.deepEqual(leftovers, [], `${name} left shared-memory segments behind (removed now)`);
        });
    }
});

#!/usr/bin/env node
// Builds the native addon (native/binding.gyp) with the node-gyp in node_modules.
//
//   node scripts/build-native.mjs                  Release → native/build/Release/mixz.node
//   node scripts/build-native.mjs --debug          Debug   → native/build/Debug/mixz.node
//   node scripts/build-native.mjs --debug --asan   Debug with AddressSanitizer + UBSan (--asan implies --debug)
//
// Works from npm scripts (postinstall, build:native*) and run directly, from any directory.
// Never downloads anything: Node's headers come from the installation running this script
// (<prefix>/include/node, e.g. Debian's /usr/include/node), and node-gyp is told so with --nodedir.
// A second run with nothing changed skips `configure` and lets make find nothing to do.
import {spawnSync} from "node:child_process";
import {existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync} from "node:fs";
import {availableParallelism} from "node:os";
import {dirname, join, relative} from "node:path";
import {fileURLToPath} from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const nativeDir = join(root, "native");
const buildDir = join(nativeDir, "build");
const bindingGyp = join(nativeDir, "binding.gyp");
const configGypi = join(buildDir, "config.gypi");
// What the current configuration of native/build was made for; a different mode reconfigures.
const stampPath = join(buildDir, "mixz-build-mode.json");
const nodeGyp = join(root, "node_modules", "node-gyp", "bin", "node-gyp.js");
const bootstrapHint = "run `bash scripts/bootstrap` as root (it installs libgloo-dev libopenblas-dev)";

function fail(line, status = 1) {
    console.error(`build-native: ${line}`);
    process.exit(status);
}

function parseArgs(argv) {
    const options = {debug: false, asan: false};
    for (const arg of argv) {
        if (arg === "--debug") options.debug = true;
        else if (arg === "--asan") options.asan = true;
        else fail(`unknown option ${arg} (expected --debug and/or --asan)`, 2);
    }
    // Sanitized optimized code is hard to read in reports; sanitizer builds are debug builds.
    if (options.asan) options.debug = true;
    return options;
}

// Debian puts OpenBLAS's header under the multiarch directory (…/x86_64-linux-gnu/cblas-openblas.h);
// other layouts use /usr/include/openblas/cblas.h.
function findOpenblasHeader() {
    const candidates = ["/usr/include/cblas-openblas.h", "/usr/include/openblas/cblas.h"];
    for (const entry of readdirSync("/usr/include", {withFileTypes: true})) {
        if (entry.isDirectory() && entry.name.endsWith("-linux-gnu")) {
            candidates.push(join("/usr/include", entry.name, "cblas-openblas.h"));
        }
    }
    return candidates.find((path) => existsSync(path));
}

const glooHeader = "/usr/include/gloo/context.h";

function checkPrerequisites() {
    const missing = [];
    if (!existsSync(glooHeader)) missing.push(`Gloo headers (${glooHeader})`);
    if (findOpenblasHeader() === undefined) missing.push("OpenBLAS headers (cblas-openblas.h)");
    if (missing.length > 0) fail(`missing ${missing.join(" and ")}: ${bootstrapHint}`);
    if (!existsSync(nodeGyp)) fail(`node-gyp is not installed (${relative(root, nodeGyp)}): run \`npm ci\``);
}

function readStamp() {
    try {
        return readFileSync(stampPath, "utf8");
    } catch {
        return undefined;
    }
}

function mtimeMs(path) {
    try {
        return statSync(path).mtimeMs;
    } catch {
        return undefined;
    }
}

function runNodeGyp(command, args, gypArgs = []) {
    // stdout carries make's one-line-per-file progress: dropped on success, shown on failure.
    // stderr (compiler warnings and errors, gyp warnings) goes straight to the terminal.
    const result = spawnSync(process.execPath, [nodeGyp, command, ...args, "--loglevel=warn", "--", ...gypArgs], {
        cwd: nativeDir,
        stdio: ["ignore", "pipe", "inherit"],
        encoding: "utf8",
        maxBuffer: 64 * 1024 * 1024
    });
    if (result.error !== undefined) fail(`cannot run node-gyp: ${result.error.message}`);
    if (result.status !== 0) {
        process.stderr.write(result.stdout ?? "");
        fail(`node-gyp ${command} failed (exit ${result.status ?? result.signal}); see the output above`);
    }
}

const options = parseArgs(process.argv.slice(2));
checkPrerequisites();

const buildType = options.debug ? "Debug" : "Release";
const commonArgs = options.debug ? ["--debug"] : [];
// The headers of the running Node: with --nodedir node-gyp never tries to download them.
const nodeDir = dirname(dirname(process.execPath));
if (existsSync(join(nodeDir, "include", "node", "node_api.h"))) commonArgs.push(`--nodedir=${nodeDir}`);

const mode = JSON.stringify({buildType, asan: options.asan, node: process.version, nodeDir});
const gypMtime = mtimeMs(bindingGyp);
const configMtime = mtimeMs(configGypi);
const configured =
    configMtime !== undefined && gypMtime !== undefined && gypMtime <= configMtime && readStamp() === mode;

const started = process.hrtime.bigint();
if (!configured) {
    // The stamp goes first and comes back only after success, so a failed configure is redone.
    rmSync(stampPath, {force: true});
    runNodeGyp("configure", commonArgs, [`-Dmixz_asan=${options.asan ? 1 : 0}`]);
    mkdirSync(buildDir, {recursive: true});
    writeFileSync(stampPath, mode);
}

const output = join(buildDir, buildType, "mixz.node");
const before = mtimeMs(output);
runNodeGyp("build", [...commonArgs, `--jobs=${availableParallelism()}`]);
const after = mtimeMs(output);
if (after === undefined) fail(`node-gyp succeeded but ${relative(root, output)} does not exist`);

const seconds = (Number(process.hrtime.bigint() - started) / 1e9).toFixed(1);
const what = `${buildType}${options.asan ? " (asan+ubsan)" : ""}`;
const state = before === after ? "up to date" : "built";
console.log(`build-native: ${what} ${state}: ${relative(root, output)} (${seconds} s)`);

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
//
// The CUDA backend (native/src/cuda/**/*.cu) is compiled by nvcc when one is found (MIXZ_NVCC,
// `nvcc` on PATH, $CUDA_HOME/bin/nvcc, /usr/local/cuda/bin/nvcc; MIXZ_NO_CUDA=1 skips the search)
// into native/build/cuda/<type>/libmixz_cuda.a, which binding.gyp links whole (gyp variable
// mixz_cuda=1) together with the static CUDA runtime, so the addon loads where there is no
// libcudart and no driver. Without nvcc the addon is built exactly as before, CPU only.
import {spawn, spawnSync} from "node:child_process";
import {existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync} from "node:fs";
import {availableParallelism} from "node:os";
import {delimiter, dirname, join, relative, resolve} from "node:path";
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

// --- CUDA ---------------------------------------------------------------------------------------

const cudaSourceDir = join(nativeDir, "src", "cuda");

function isFile(path) {
    try {
        return statSync(path).isFile();
    } catch {
        return false;
    }
}

// The nvcc this build uses, in the documented order, or why there is none:
// {nvcc} | {searched} | {skipped} (MIXZ_NO_CUDA=1).
function findNvcc() {
    if (process.env.MIXZ_NO_CUDA === "1") return {skipped: true};
    const candidates = [];
    if (process.env.MIXZ_NVCC) candidates.push(process.env.MIXZ_NVCC);
    for (const dir of (process.env.PATH ?? "").split(delimiter)) if (dir !== "") candidates.push(join(dir, "nvcc"));
    if (process.env.CUDA_HOME) candidates.push(join(process.env.CUDA_HOME, "bin", "nvcc"));
    candidates.push("/usr/local/cuda/bin/nvcc");
    const nvcc = candidates.find(isFile);
    if (nvcc !== undefined) return {nvcc};
    // PATH is summarized: listing every directory would bury the line.
    const searched = [...(process.env.MIXZ_NVCC ? ["MIXZ_NVCC"] : []), "PATH"];
    if (process.env.CUDA_HOME) searched.push(join(process.env.CUDA_HOME, "bin", "nvcc"));
    searched.push("/usr/local/cuda/bin/nvcc");
    return {searched};
}

// The toolkit's root as nvcc itself sees it (its TOP), so a wrapper script on PATH (e.g.
// /usr/local/bin/nvcc → exec /usr/local/cuda-13.0/bin/nvcc) still gives the right lib64.
function cudaHomeOf(nvcc) {
    const dryrun = spawnSync(nvcc, ["-v", "--dryrun", "-x", "cu", "-c", "/dev/null", "-o", "/dev/null"], {encoding: "utf8"});
    if (dryrun.error !== undefined) fail(`cannot run ${nvcc}: ${dryrun.error.message}`);
    const top = /^#\$ TOP=(.*)$/m.exec(`${dryrun.stdout}${dryrun.stderr}`);
    if (top !== null && top[1] !== undefined) return realpathSync(top[1].trim());
    return realpathSync(dirname(dirname(realpathSync(nvcc))));
}

function nvccVersion(nvcc) {
    const result = spawnSync(nvcc, ["--version"], {encoding: "utf8"});
    const release = /release ([0-9.]+), (V[0-9.]+)/.exec(result.stdout ?? "");
    return release === null ? "unknown" : `${release[1]} (${release[2]})`;
}

function cudaSources(dir = cudaSourceDir) {
    if (!existsSync(dir)) return [];
    const sources = [];
    for (const entry of readdirSync(dir, {withFileTypes: true})) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) sources.push(...cudaSources(path));
        else if (entry.isFile() && entry.name.endsWith(".cu")) sources.push(path);
    }
    return sources.sort();
}

// The flags of every CUDA object. sm_80 (A100) and sm_90 (H100/H200) as machine code, plus
// compute_90 PTX so newer GPUs can JIT it. Host code gets the addon's own conventions: PIC (it
// goes into a shared object), exceptions and RTTI (the error model). -fmad is left at nvcc's
// default (contraction on); `fmadFlags` is the one place to change that for every object.
const fmadFlags = [];
function nvccFlags(debug) {
    return [
        "-std=c++17",
        ...(debug ? ["-O0", "-g"] : ["-O2", "-DNDEBUG"]),
        "-Xcompiler", "-fPIC,-fexceptions,-frtti",
        "-gencode", "arch=compute_80,code=sm_80",
        "-gencode", "arch=compute_90,code=sm_90",
        "-gencode", "arch=compute_90,code=compute_90",
        ...fmadFlags,
        `-I${join(nativeDir, "include")}`,
        `-I${join(nativeDir, "src")}`,
        "-DMIXZ_WITH_CUDA=1"
    ];
}

// The files an object was built from, from nvcc's make-style .d file (undefined: rebuild).
function dependenciesOf(depFile) {
    let text;
    try {
        text = readFileSync(depFile, "utf8");
    } catch {
        return undefined;
    }
    const body = text.replace(/\\\n/g, " ");
    const colon = body.indexOf(": ");
    if (colon < 0) return undefined;
    // Relative entries are relative to native/, where nvcc ran.
    return body
        .slice(colon + 2)
        .split(/\s+/)
        .filter((path) => path !== "" && !path.endsWith(":"))
        .map((path) => resolve(nativeDir, path));
}

// Headers under native/src/cuda count as dependencies of every CUDA object, whatever its .d says:
// a file may include one through __has_include before it exists (cuda_backend.cu and
// llama/llama_device.h), and its .d cannot name a file that was not there.
function cudaHeaders(dir = cudaSourceDir) {
    if (!existsSync(dir)) return [];
    const headers = [];
    for (const entry of readdirSync(dir, {withFileTypes: true})) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) headers.push(...cudaHeaders(path));
        else if (entry.isFile() && /\.(h|cuh)$/.test(entry.name)) headers.push(path);
    }
    return headers;
}

function stale(object, depFile, flagsChanged, newestHeader) {
    if (flagsChanged) return true;
    const built = mtimeMs(object);
    if (built === undefined) return true;
    if (newestHeader > built) return true;
    const deps = dependenciesOf(depFile);
    if (deps === undefined) return true;
    // A dependency that vanished (a renamed header) also means rebuild: the .cu must have changed.
    return deps.some((dep) => {
        const changed = mtimeMs(dep);
        return changed === undefined || changed > built;
    });
}

// nvcc runs in native/ with the source as src/cuda/…, so __FILE__ (in error messages) reads
// "src/cuda/x.cu" as the g++ objects' "src/…" do, whatever the checkout's path.
function runNvcc(nvcc, args) {
    return new Promise((resolvePromise) => {
        const child = spawn(nvcc, args, {cwd: nativeDir, stdio: ["ignore", "pipe", "pipe"]});
        let output = "";
        child.stdout.setEncoding("utf8").on("data", (chunk) => (output += chunk));
        child.stderr.setEncoding("utf8").on("data", (chunk) => (output += chunk));
        child.on("error", (error) => resolvePromise({status: -1, output: `${output}${error.message}\n`}));
        child.on("close", (status, signal) => resolvePromise({status: status ?? signal, output}));
    });
}

// Compiles the stale objects (in parallel), archives them, and says whether the archive changed.
async function buildCuda(nvcc, buildType, debug) {
    const outDir = join(buildDir, "cuda", buildType);
    const archive = join(outDir, "libmixz_cuda.a");
    mkdirSync(outDir, {recursive: true});
    const flags = nvccFlags(debug);
    const flagsStamp = join(outDir, "flags.json");
    // `cwd` is part of what an object is built from (__FILE__, the .d paths).
    const flagsText = JSON.stringify({nvcc, flags, cwd: nativeDir, sources: "relative"});
    const flagsChanged = (() => {
        try {
            return readFileSync(flagsStamp, "utf8") !== flagsText;
        } catch {
            return true;
        }
    })();

    const units = cudaSources().map((source) => {
        const object = join(outDir, relative(cudaSourceDir, source).replace(/\.cu$/, ".o"));
        return {source, object, depFile: `${object}.d`};
    });
    const newestHeader = Math.max(0, ...cudaHeaders().map((path) => mtimeMs(path) ?? 0));
    const todo = units.filter((unit) => stale(unit.object, unit.depFile, flagsChanged, newestHeader));
    // A stamp is only trusted once every object it describes exists; written before compiling so
    // an interrupted run does not leave new objects judged against old flags.
    writeFileSync(flagsStamp, flagsText);

    let next = 0;
    const failures = [];
    const worker = async () => {
        while (next < todo.length && failures.length === 0) {
            const unit = todo[next++];
            mkdirSync(dirname(unit.object), {recursive: true});
            rmSync(unit.object, {force: true});
            const source = relative(nativeDir, unit.source);
            const result = await runNvcc(nvcc, [...flags, "-MD", "-MF", unit.depFile, "-c", source, "-o", unit.object]);
            if (result.status !== 0) {
                rmSync(unit.object, {force: true});
                failures.push({unit, result});
            } else if (result.output.trim() !== "") {
                process.stderr.write(result.output); // warnings
            }
        }
    };
    await Promise.all(Array.from({length: Math.max(1, Math.min(availableParallelism(), todo.length))}, worker));
    if (failures.length > 0) {
        for (const {result} of failures) process.stderr.write(result.output);
        const names = failures.map(({unit}) => relative(root, unit.source)).join(", ");
        fail(`nvcc failed on ${names} (exit ${failures.map(({result}) => result.status).join(", ")}); see the output above`);
    }

    // The archive is rebuilt from scratch when any member changed or the list of sources did (a
    // deleted .cu must not leave its object linked in).
    const members = units.map((unit) => relative(outDir, unit.object));
    const membersStamp = join(outDir, "members.json");
    const membersText = JSON.stringify(members);
    const archiveTime = mtimeMs(archive);
    const upToDate =
        todo.length === 0 &&
        archiveTime !== undefined &&
        readStampFile(membersStamp) === membersText &&
        units.every((unit) => (mtimeMs(unit.object) ?? Infinity) <= archiveTime);
    if (upToDate) return {archive, changed: false, compiled: 0};
    rmSync(archive, {force: true});
    rmSync(membersStamp, {force: true});
    // An empty archive is still valid input for the linker (no .cu yet: nothing to link).
    const ar = spawnSync("ar", ["rcs", archive, ...members], {cwd: outDir, encoding: "utf8"});
    if (ar.error !== undefined || ar.status !== 0) {
        fail(`ar failed for ${relative(root, archive)}: ${ar.error?.message ?? ar.stderr}`);
    }
    writeFileSync(membersStamp, membersText);
    return {archive, changed: true, compiled: todo.length};
}

function readStampFile(path) {
    try {
        return readFileSync(path, "utf8");
    } catch {
        return undefined;
    }
}

const options = parseArgs(process.argv.slice(2));
checkPrerequisites();

const buildType = options.debug ? "Debug" : "Release";
const commonArgs = options.debug ? ["--debug"] : [];
// The headers of the running Node: with --nodedir node-gyp never tries to download them.
const nodeDir = dirname(dirname(process.execPath));
if (existsSync(join(nodeDir, "include", "node", "node_api.h"))) commonArgs.push(`--nodedir=${nodeDir}`);

const started = process.hrtime.bigint();
const found = findNvcc();
let cuda = {enabled: false};
if (found.skipped === true) {
    console.log("build-native: MIXZ_NO_CUDA=1: building without the CUDA backend");
} else if (found.nvcc === undefined) {
    console.log(`build-native: nvcc not found (searched ${found.searched.join(", ")}): building without the CUDA backend`);
} else {
    const home = cudaHomeOf(found.nvcc);
    const cudart = join(home, "lib64", "libcudart_static.a");
    const cudartAlt = join(home, "targets", "x86_64-linux", "lib", "libcudart_static.a");
    const cudartStatic = isFile(cudart) ? cudart : cudartAlt;
    if (!isFile(cudartStatic)) fail(`${found.nvcc} found, but not the static CUDA runtime (${cudart})`);
    const built = await buildCuda(found.nvcc, buildType, options.debug);
    cuda = {enabled: true, nvcc: found.nvcc, version: nvccVersion(found.nvcc), home, cudartStatic, ...built};
    // The link of mixz.node does not depend on the archive in make's eyes (gyp lists it as a
    // library flag); removing the linked file makes make relink it with the new archive.
    if (built.changed) rmSync(join(buildDir, buildType, "obj.target", "mixz.node"), {force: true});
}
const cudaGypArgs = cuda.enabled
    ? ["-Dmixz_cuda=1", `-Dmixz_cuda_home=${cuda.home}`, `-Dmixz_cuda_lib=${cuda.archive}`, `-Dmixz_cudart_static=${cuda.cudartStatic}`]
    : ["-Dmixz_cuda=0"];

const mode = JSON.stringify({
    buildType,
    asan: options.asan,
    node: process.version,
    nodeDir,
    cuda: cuda.enabled ? {nvcc: cuda.nvcc, home: cuda.home} : false
});
const gypMtime = mtimeMs(bindingGyp);
const configMtime = mtimeMs(configGypi);
const configured =
    configMtime !== undefined && gypMtime !== undefined && gypMtime <= configMtime && readStamp() === mode;

if (!configured) {
    // The stamp goes first and comes back only after success, so a failed configure is redone.
    rmSync(stampPath, {force: true});
    runNodeGyp("configure", commonArgs, [`-Dmixz_asan=${options.asan ? 1 : 0}`, ...cudaGypArgs]);
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
const cudaNote = cuda.enabled
    ? `; CUDA backend: nvcc ${cuda.version}, ${cuda.compiled} CUDA object(s) compiled`
    : "; no CUDA backend";
console.log(`build-native: ${what} ${state}: ${relative(root, output)}${cudaNote} (${seconds} s)`);

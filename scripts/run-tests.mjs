#!/usr/bin/env node
// Runs every test file with node:test. Tests import workspace packages through the "source"
// export condition, so they exercise src/*.ts directly (tsx compiles on the fly); CLI tests spawn
// bin/mixz, which runs the built dist/ (scripts/bootstrap builds it first).
//
// Usage: node scripts/run-tests.mjs [substring …]   (only files whose path contains a substring)
import {spawnSync} from "node:child_process";
import {readdirSync, statSync} from "node:fs";
import {join, relative} from "node:path";
import {fileURLToPath} from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

function collect(dir, out) {
    let entries;
    try {
        entries = readdirSync(dir);
    } catch {
        return out;
    }
    for (const name of entries) {
        if (name === "node_modules" || name === "dist" || name === "fixtures") continue;
        const path = join(dir, name);
        if (statSync(path).isDirectory()) collect(path, out);
        else if (name.endsWith(".test.ts")) out.push(relative(root, path));
    }
    return out;
}

const files = [];
for (const pkg of readdirSync(join(root, "packages")).sort()) collect(join(root, "packages", pkg, "test"), files);
collect(join(root, "test"), files);

const filters = process.argv.slice(2);
const selected = filters.length === 0 ? files : files.filter((f) => filters.some((s) => f.includes(s)));
if (selected.length === 0) {
    console.error(`run-tests: no test file matches ${filters.join(", ")}`);
    process.exit(2);
}

const result = spawnSync(
    process.execPath,
    ["--conditions=source", "--import", "tsx", "--test", "--test-reporter=spec", ...selected],
    {cwd: root, stdio: "inherit", env: {...process.env, MIXZ_TEST: "1"}}
);
process.exit(result.status ?? 1);

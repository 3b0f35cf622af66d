// The tag registry: no two collectives share a tag, the native engine's tags (its C++ header) lie
// in the range the registry reserves for them, and no engine source outside the registry writes a
// tag literal.
import assert from "node:assert/strict";
import {readdirSync, readFileSync, statSync} from "node:fs";
import {join} from "node:path";
import {describe, it} from "node:test";
import {fileURLToPath} from "node:url";
import {CollectiveTags, nativeEngineTagRange, registeredTags} from "@mixz/engine";

const root = fileURLToPath(new URL("../../../../", import.meta.url));
const header = join(root, "native/include/mixz/zero/collective_tags.h");

function nativeTags(): {name: string; tag: number}[] {
    return [...readFileSync(header, "utf8").matchAll(/inline constexpr std::uint32_t (k\w+) = (\d+);/g)].map((m) => ({name: m[1]!, tag: Number(m[2])}));
}

function sources(dir: string, ext: RegExp, out: string[] = []): string[] {
    for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        if (statSync(path).isDirectory()) sources(path, ext, out);
        else if (ext.test(name)) out.push(path);
    }
    return out;
}

describe("collective tags", () => {
    it("every registered tag is distinct and outside the native engine's range", () => {
        const tags = registeredTags();
        assert.ok(tags.length >= 14, `the registry lists its tags (${tags.length})`);
        const seen = new Map<number, string>();
        for (const {name, tag} of tags) {
            assert.ok(Number.isInteger(tag) && tag > 0 && tag < 2 ** 32, `${name}: ${tag}`);
            assert.equal(seen.get(tag), undefined, `${name} and ${seen.get(tag)} share tag ${tag}`);
            seen.set(tag, name);
            assert.ok(tag < nativeEngineTagRange.first || tag > nativeEngineTagRange.last, `${name} (${tag}) lies in the native engine's range`);
        }
        assert.equal(CollectiveTags.checkpoint.loadReady, 7104);
    });

    it("the native engine's tags (collective_tags.h) are distinct and inside its reserved range", () => {
        const tags = nativeTags();
        assert.ok(tags.length >= 6, `the header holds the engine's tags (${tags.length})`);
        assert.equal(new Set(tags.map((t) => t.tag)).size, tags.length, "distinct");
        for (const {name, tag} of tags) assert.ok(tag >= nativeEngineTagRange.first && tag <= nativeEngineTagRange.last, `${name} = ${tag}`);
    });

    it("no source outside the two registries writes a tag literal", () => {
        const offenders: string[] = [];
        const ts = sources(join(root, "packages"), /\.ts$/).filter((f) => f.includes("/src/") && !f.endsWith("comm/collectiveTags.ts"));
        for (const file of ts) {
            readFileSync(file, "utf8").split("\n").forEach((line, i) => {
                if (/\btag: *\d|, *7[0-9]{3}\)|\bkTag\w* = \d/.test(line)) offenders.push(`${file}:${i + 1}: ${line.trim()}`);
            });
        }
        // self_test.cc is the communicator's fault-scenario test, compiled into the addon for the
        // TS tests: its collectives run on a communicator of their own.
        const cc = sources(join(root, "native/src"), /\.(cc|h)$/).concat(sources(join(root, "native/addon"), /\.(cc|h)$/)).filter((f) => !f.endsWith("comm/self_test.cc"));
        for (const file of cc) {
            readFileSync(file, "utf8").split("\n").forEach((line, i) => {
                if (!line.trim().startsWith("//") && /\.tag = \d|tagBase/.test(line)) offenders.push(`${file}:${i + 1}: ${line.trim()}`);
            });
        }
        assert.deepEqual(offenders, []);
    });
});

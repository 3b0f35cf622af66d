// Replaces one benchmark's section of docs/BENCHMARKS.md (between `<!-- NAME:begin -->` and
// `<!-- NAME:end -->`, markers included in `section`), or appends it; other sections stay as they are.
import {existsSync, readFileSync, writeFileSync} from "node:fs";

const kHeader = "# Benchmarks\n\nFigures measured by the scripts in scripts/bench/ (`npm run bench` runs them all). Each script rewrites only its own\n" +
    "section, between its markers; compare figures only within one section (one run, interleaved).\n";

export function writeDocsSection(docsPath, name, section) {
    const begin = `<!-- ${name}:begin -->`;
    const end = `<!-- ${name}:end -->`;
    let doc = existsSync(docsPath) ? readFileSync(docsPath, "utf8") : kHeader;
    const from = doc.indexOf(begin);
    const to = doc.indexOf(end);
    if (from !== -1 && to > from) doc = doc.slice(0, from) + section + doc.slice(to + end.length);
    else doc = `${doc.trimEnd()}\n\n${section}\n`;
    writeFileSync(docsPath, doc);
}

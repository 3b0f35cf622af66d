// Entry point of a rank daemon (@mixz/daemon/main): started by `mixz launch`, locally or over SSH,
// with the rank descriptor as the first line of stdin. Not meant to be run by hand.
import {readFileSync} from "node:fs";
import {parseRankDescriptor} from "@mixz/protocol";
import {readDescriptorLine} from "./readDescriptorLine.js";
import {runRank} from "./runRank.js";

const ownVersion = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {version: string}).version;

const line = readDescriptorLine();
if (line === null) {
    process.stderr.write("mixz-daemon: stdin ended before the rank descriptor arrived; this program is started by `mixz launch`\n");
    process.exit(1);
}
try {
    await runRank(parseRankDescriptor(line), ownVersion);
} catch (error) {
    process.stderr.write(`mixz-daemon: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
}

import {readFileSync} from "node:fs";

/** The installed mixz version (the CLI package's; all workspace packages move together). */
export const mixzVersion: string = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {version: string}).version;

import assert from "node:assert/strict";
import {it} from "node:test";
import {formatIdList} from "@mixz/plan";

const cases: Array<[number[], string]> = [
    [[], ""],
    [[0], "0"],
    [[0, 1], "0,1"],
    [[0, 1, 2], "0-2"],
    [[0, 1, 2, 3, 5], "0-3,5"],
    [[1, 3, 5], "1,3,5"],
    [[0, 2, 3, 4, 6, 7], "0,2-4,6,7"],
    [[1016, 1017, 1018, 1019], "1016-1019"]
];
for (const [ids, text] of cases) it(`[${ids.join(",")}] → '${text}'`, () => assert.equal(formatIdList(ids), text));

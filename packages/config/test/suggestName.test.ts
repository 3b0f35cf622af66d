import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {damerauLevenshtein, suggestName} from "@mixz/config";

describe("damerauLevenshtein", () => {
    const cases: readonly [string, string, number][] = [
        ["", "", 0],
        ["", "abc", 3],
        ["abc", "", 3],
        ["stage", "stage", 0],
        ["stage", "stag", 1],
        ["stage", "satge", 1], // transposition
        ["ca", "abc", 2], // unrestricted: an edit between transposed characters (OSA gives 3)
        ["kitten", "sitting", 3],
        ["stage3_prefetch_bucketsize", "stage3_prefetch_bucket_size", 1],
        ["overlap_com", "overlap_comm", 1]
    ];
    for (const [a, b, distance] of cases) {
        it(`${JSON.stringify(a)} ↔ ${JSON.stringify(b)} = ${distance}`, () => {
            assert.equal(damerauLevenshtein(a, b), distance);
            assert.equal(damerauLevenshtein(b, a), distance);
        });
    }
});

describe("suggestName", () => {
    const zeroKeys = ["stage", "stage3_prefetch_bucket_size", "prefetch_bucket_size", "zero_hpz_partition_size", "overlap_comm", "reduce_bucket_size"];
    const cases: readonly [string, readonly string[], string | undefined][] = [
        ["stage3_prefetch_bucketsize", zeroKeys, "stage3_prefetch_bucket_size"],
        ["prefetch_bucketsize", zeroKeys, "prefetch_bucket_size"],
        ["hpz_partition_size", zeroKeys, "zero_hpz_partition_size"],
        ["Stage", zeroKeys, "stage"], // letter case alone costs nothing
        ["overlapcomm", zeroKeys, "overlap_comm"],
        ["stgae", zeroKeys, "stage"],
        ["xyz", zeroKeys, undefined],
        ["completely_unrelated_key", zeroKeys, undefined],
        ["ab", ["cd"], "cd"], // short names: distance 2 is still allowed
        ["ab", ["cde"], undefined]
    ];
    for (const [name, candidates, expected] of cases) {
        it(`${name} → ${String(expected)}`, () => {
            assert.equal(suggestName(name, candidates), expected);
        });
    }

    it("prefers the closest candidate, then the earlier one", () => {
        assert.equal(suggestName("abcd", ["abxy", "abcx", "abcy"]), "abcx");
    });

    it("never suggests the name itself", () => {
        assert.equal(suggestName("stage", ["stage"]), undefined);
    });
});

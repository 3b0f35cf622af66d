import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {ErrorCodes, InputError} from "@mixz/protocol";
import {averageBusBandwidth, busBandwidth, fitNumber, formatBenchTable, formatBytes, parseSize, perRankCount, plotBusBandwidth, sizeSequence, type BenchRow} from "@mixz/bench";

describe("sizes", () => {
    for (const [text, bytes] of [["0", 0], ["1", 1], ["32M", 33554432], ["8k", 8192], ["1G", 1073741824], [" 4K ", 4096]] as const) {
        it(`${JSON.stringify(text)} → ${bytes}`, () => assert.equal(parseSize(text, "-b"), bytes));
    }
    for (const text of ["", "1.5M", "M", "4T", "-1", "1e6"]) {
        it(`${JSON.stringify(text)} is refused`, () => assert.throws(() => parseSize(text, "-e"), (e: unknown) => e instanceof InputError && e.problems[0]!.code === ErrorCodes.usage && e.problems[0]!.path === "-e"));
    }
    it("doubling from -b to -e, inclusive", () => assert.deepEqual(sizeSequence(1024, 8192, 2, 0), [1024, 2048, 4096, 8192]));
    it("adding -i when -f is 1", () => assert.deepEqual(sizeSequence(100, 400, 1, 150), [100, 250, 400]));
    it("a single size", () => assert.deepEqual(sizeSequence(4096, 4096, 2, 0), [4096]));
    it("min above max is nccl-tests' error", () => assert.throws(() => sizeSequence(8, 4, 2, 0), /invalid sizes for 'minbytes' and 'maxbytes': 8 > 4/));
    it("per-rank counts are multiples of 16 bytes", () => {
        assert.equal(perRankCount(1073741824, 4, 8), 33554432);
        assert.equal(perRankCount(100, 4, 2), 12);
        assert.equal(perRankCount(100, 2, 2), 24);
        assert.equal(perRankCount(100, 1, 3), 32);
        assert.equal(perRankCount(31, 4, 2), 0);
    });
});

describe("bandwidth", () => {
    it("the PERFORMANCE.md worked example: n=8, 1 GiB, 10 ms", () => {
        const {algbw, busbw} = busBandwidth("allgather", 33554432, 4, 8, 0.01);
        assert.equal(algbw.toFixed(2), "107.37");
        assert.equal(busbw.toFixed(2), "93.95");
    });
    it("one rank moves nothing over the bus", () => assert.equal(busBandwidth("reducescatter", 1024, 4, 1, 0.001).busbw, 0));
    it("numbers fit their columns like nccl-tests", () => {
        assert.equal(fitNumber(12.345, 6), " 12.35");
        assert.equal(fitNumber(1234.5, 6), "1234.5");
        assert.equal(fitNumber(123456.7, 6), "123457");
        assert.equal(fitNumber(12345678, 6), "  1e+7");
    });
});

describe("report", () => {
    const rows: BenchRow[] = [
        {size: 1048576, count: 131072, type: "float", time_us: 250.5, algbw: 4.19, busbw: 2.09, wire_bytes: 524288, wrong: 0},
        {size: 2097152, count: 262144, type: "float", time_us: 400, algbw: 5.24, busbw: 2.62, wire_bytes: 1048576, wrong: 0}
    ];
    it("table, footer with the average over every row", () => {
        const text = formatBenchTable({collective: "allgather", ranks: 2, dtype: "fp32", quant: "none", rows, avg_busbw: averageBusBandwidth(rows)}, ["mixz bench allgather"]);
        assert.match(text, /^# mixz bench allgather\n#\n# +size +count +type +time +algbw +busbw +#wrong\n/);
        assert.match(text, /\n +1048576 +131072 +float +250\.50 + 4\.19 + 2\.09 +0\n/);
        assert.match(text, /# Out of bounds values : 0 OK\n# Avg bus bandwidth {4}: 2\.3550 \n/);
        assert.doesNotMatch(text, /wire/);
    });
    it("quantized runs show the wire bytes; wrong values fail the footer", () => {
        const bad = [{...rows[0]!, wrong: 3}];
        const text = formatBenchTable({collective: "allgather", ranks: 2, dtype: "fp16", quant: "int8", rows: bad, avg_busbw: 1}, []);
        assert.match(text, /wire/);
        assert.match(text, /# Out of bounds values : 3 FAILED/);
    });
});

describe("plot", () => {
    it("an SVG with one line and legend entry per series and labelled axes", () => {
        const svg = plotBusBandwidth([
            {label: "fp32, 2 ranks", points: [{size: 1048576, busbw: 2}, {size: 268435456, busbw: 5}]},
            {label: "fp16 int8 <q>", points: [{size: 1048576, busbw: 3}, {size: 268435456, busbw: 8}]}
        ], "all-gather");
        assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
        assert.equal(svg.match(/<polyline /g)?.length, 2);
        assert.match(svg, />1M<\/text>/);
        assert.match(svg, />256M<\/text>/);
        assert.match(svg, /bus bandwidth \(GB\/s\)/);
        assert.match(svg, /fp16 int8 &lt;q&gt;/);
        assert.match(svg, /<\/svg>\n$/);
    });
    it("byte labels", () => assert.deepEqual([1, 1536, 1048576, 3 * 2 ** 30].map(formatBytes), ["1", "1.5K", "1M", "3G"]));
});

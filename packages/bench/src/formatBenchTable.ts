import type {BenchCollective} from "./busBandwidth.js";

/** One measured size, in the units of DESIGN.md §4's JSON (`--json`). */
export interface BenchRow {
    /** Total bytes of the array (count × element bytes × ranks), unquantized. */
    readonly size: number;
    /** Elements per rank. */
    readonly count: number;
    readonly type: string;
    readonly time_us: number;
    readonly algbw: number;
    readonly busbw: number;
    /** Bytes one rank's data took on the wire (quantized data and scales); equals its chunk without quantization. */
    readonly wire_bytes: number;
    /** Wrong elements found by the check; null when the check is off (-c 0). */
    readonly wrong: number | null;
}

export interface BenchReport {
    readonly collective: BenchCollective;
    readonly ranks: number;
    readonly dtype: string;
    readonly quant: string;
    readonly rows: readonly BenchRow[];
    readonly avg_busbw: number;
}

/** Mean busbw over every row, as nccl-tests' "Avg bus bandwidth" footer. */
export function averageBusBandwidth(rows: readonly BenchRow[]): number {
    return rows.length === 0 ? 0 : rows.reduce((sum, row) => sum + row.busbw, 0) / rows.length;
}

/**
 * A number in a fixed-width column the way nccl-tests prints it: two decimals, falling back to
 * one, then none, then exponent form when the value does not fit.
 */
export function fitNumber(value: number, width: number): string {
    for (const digits of [2, 1, 0]) {
        const text = value.toFixed(digits);
        if (text.length <= width) return text.padStart(width);
    }
    return value.toExponential(0).padStart(width);
}

/** The report as nccl-tests-style text: header lines, the table, and the footer. */
export function formatBenchTable(report: BenchReport, header: readonly string[]): string {
    const lines = [...header.map((line) => `# ${line}`)];
    const quantized = report.quant !== "none";
    lines.push("#");
    lines.push(`# ${"size".padStart(12)} ${"count".padStart(12)} ${"type".padStart(6)}   ${"time".padStart(7)} ${"algbw".padStart(6)} ${"busbw".padStart(6)} ${"#wrong".padStart(6)}${quantized ? ` ${"wire".padStart(12)}` : ""}`);
    lines.push(`# ${"(B)".padStart(12)} ${"(elements)".padStart(12)} ${"".padStart(6)}   ${"(us)".padStart(7)} ${"(GB/s)".padStart(6)} ${"(GB/s)".padStart(6)} ${"".padStart(6)}${quantized ? ` ${"(B/rank)".padStart(12)}` : ""}`);
    for (const row of report.rows) {
        lines.push(`  ${String(row.size).padStart(12)} ${String(row.count).padStart(12)} ${row.type.padStart(6)}   ${fitNumber(row.time_us, 7)} ${fitNumber(row.algbw, 6)} ${fitNumber(row.busbw, 6)} ${(row.wrong === null ? "N/A" : String(row.wrong)).padStart(6)}${quantized ? ` ${String(row.wire_bytes).padStart(12)}` : ""}`);
    }
    const wrong = report.rows.reduce((sum, row) => sum + (row.wrong ?? 0), 0);
    lines.push(`# Out of bounds values : ${wrong} ${wrong === 0 ? "OK" : "FAILED"}`);
    lines.push(`# Avg bus bandwidth    : ${report.avg_busbw.toFixed(4)} `);
    lines.push("#");
    return `${lines.join("\n")}\n`;
}

import {quantBenchmark, type FloatDType, type QuantBits} from "@mixz/engine";
import {fitNumber} from "./formatBenchTable.js";

export interface QuantizeBenchOptions {
    readonly sizes: readonly number[];
    readonly dtype: FloatDType;
    readonly bits: QuantBits;
    readonly blockSize: number;
    readonly iterations: number;
    readonly threads: number;
}

/** One size of `mixz bench quantize`: GB/s of input consumed (10^9 bytes/s). */
export interface QuantizeBenchRow {
    readonly size: number;
    readonly count: number;
    readonly type: FloatDType;
    /** Input bytes of the model dtype consumed per second by quantize. */
    readonly quantize_gbps: number;
    /** Quantized bytes (codes + scales) consumed per second by dequantize. */
    readonly dequantize_gbps: number;
    /** Model-dtype bytes produced per second by dequantize. */
    readonly dequantize_out_gbps: number;
    /** Single-thread memcpy of the same input, the reference. */
    readonly memcpy_gbps: number;
}

const kElementBytes: Record<FloatDType, number> = {fp32: 4, fp16: 2, bf16: 2};

/** Runs the quantizer at every size; rows for the table and for --json. */
export async function runQuantizeBench(options: QuantizeBenchOptions): Promise<QuantizeBenchRow[]> {
    const rows: QuantizeBenchRow[] = [];
    for (const size of options.sizes) {
        const count = Math.floor(size / kElementBytes[options.dtype]);
        if (count === 0) continue;
        const result = await quantBenchmark({elements: count, dtype: options.dtype, bits: options.bits, blockSize: options.blockSize, iterations: options.iterations, threads: options.threads});
        rows.push({
            size: count * kElementBytes[options.dtype],
            count,
            type: options.dtype,
            quantize_gbps: result.quantizeGBps,
            dequantize_gbps: result.dequantizeGBps,
            dequantize_out_gbps: result.dequantizeOutputGBps,
            memcpy_gbps: result.memcpyGBps
        });
    }
    return rows;
}

export function formatQuantizeTable(rows: readonly QuantizeBenchRow[], header: readonly string[]): string {
    const lines = header.map((line) => `# ${line}`);
    lines.push("#");
    lines.push(`# ${"size".padStart(12)} ${"count".padStart(12)} ${"type".padStart(5)}   ${"quant".padStart(6)} ${"dequant".padStart(7)} ${"dq out".padStart(6)} ${"memcpy".padStart(6)}`);
    lines.push(`# ${"(B)".padStart(12)} ${"(elements)".padStart(12)} ${"".padStart(5)}   ${"(GB/s)".padStart(6)} ${"(GB/s)".padStart(7)} ${"(GB/s)".padStart(6)} ${"(GB/s)".padStart(6)}`);
    for (const row of rows) {
        lines.push(`  ${String(row.size).padStart(12)} ${String(row.count).padStart(12)} ${row.type.padStart(5)}   ${fitNumber(row.quantize_gbps, 6)} ${fitNumber(row.dequantize_gbps, 7)} ${fitNumber(row.dequantize_out_gbps, 6)} ${fitNumber(row.memcpy_gbps, 6)}`);
    }
    lines.push("#");
    return `${lines.join("\n")}\n`;
}

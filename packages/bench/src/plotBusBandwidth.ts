/** One line of the plot: a variant (e.g. "fp16, int8, 2 ranks") and its measured rows. */
export interface PlotSeries {
    readonly label: string;
    readonly points: ReadonlyArray<{readonly size: number; readonly busbw: number}>;
}

const kColors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/** `1048576` → `1M`: axis labels of sizes in the 1024-based units of -b/-e. */
export function formatBytes(bytes: number): string {
    for (const [unit, scale] of [["G", 2 ** 30], ["M", 2 ** 20], ["K", 2 ** 10]] as const) {
        if (bytes >= scale) return `${Number((bytes / scale).toFixed(1))}${unit}`;
    }
    return `${bytes}`;
}

/** A round step for about `target` ticks over [0, max]. */
function niceStep(max: number, target: number): number {
    const raw = max / target;
    const power = 10 ** Math.floor(Math.log10(raw));
    for (const multiple of [1, 2, 2.5, 5, 10]) if (multiple * power >= raw) return multiple * power;
    return 10 * power;
}

function escapeXml(text: string): string {
    return text.replace(/[<>&"]/g, (c) => ({"<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;"})[c]!);
}

/**
 * busbw against message size as an SVG document: log2 size axis labelled in K/M/G, linear GB/s
 * axis from 0, one coloured line with markers per series, a legend. Self-contained (no scripts,
 * no external fonts) so that it renders on GitHub and in a browser alike.
 */
export function plotBusBandwidth(series: readonly PlotSeries[], title: string): string {
    const width = 760;
    const height = 440;
    const left = 70;
    const right = 200;
    const top = 40;
    const bottom = 60;
    const plotWidth = width - left - right;
    const plotHeight = height - top - bottom;
    const points = series.flatMap((s) => s.points).filter((p) => p.size > 0);
    const minLog = points.length === 0 ? 0 : Math.floor(Math.log2(Math.min(...points.map((p) => p.size))));
    const maxLog = points.length === 0 ? 1 : Math.max(minLog + 1, Math.ceil(Math.log2(Math.max(...points.map((p) => p.size)))));
    const maxBw = Math.max(1e-9, ...points.map((p) => p.busbw));
    const step = niceStep(maxBw, 5);
    const yMax = Math.ceil(maxBw / step) * step;
    const x = (size: number): number => left + ((Math.log2(size) - minLog) / (maxLog - minLog)) * plotWidth;
    const y = (bw: number): number => top + plotHeight - (bw / yMax) * plotHeight;

    const parts: string[] = [
        `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
        `<rect width="${width}" height="${height}" fill="white"/>`,
        `<text x="${left + plotWidth / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(title)}</text>`
    ];
    const xStep = Math.max(1, Math.ceil((maxLog - minLog) / 10));
    for (let log = minLog; log <= maxLog; log += xStep) {
        const px = x(2 ** log);
        parts.push(`<line x1="${px}" y1="${top}" x2="${px}" y2="${top + plotHeight}" stroke="#e5e5e5"/>`);
        parts.push(`<text x="${px}" y="${top + plotHeight + 18}" text-anchor="middle">${formatBytes(2 ** log)}</text>`);
    }
    for (let bw = 0; bw <= yMax + 1e-12; bw += step) {
        const py = y(bw);
        parts.push(`<line x1="${left}" y1="${py}" x2="${left + plotWidth}" y2="${py}" stroke="#e5e5e5"/>`);
        parts.push(`<text x="${left - 8}" y="${py + 4}" text-anchor="end">${Number(bw.toFixed(3))}</text>`);
    }
    parts.push(`<rect x="${left}" y="${top}" width="${plotWidth}" height="${plotHeight}" fill="none" stroke="#333"/>`);
    parts.push(`<text x="${left + plotWidth / 2}" y="${height - 18}" text-anchor="middle">message size (bytes, all ranks together)</text>`);
    parts.push(`<text transform="translate(18 ${top + plotHeight / 2}) rotate(-90)" text-anchor="middle">bus bandwidth (GB/s)</text>`);
    series.forEach((s, index) => {
        const color = kColors[index % kColors.length]!;
        const visible = s.points.filter((p) => p.size > 0);
        if (visible.length > 0) {
            parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${visible.map((p) => `${x(p.size).toFixed(1)},${y(p.busbw).toFixed(1)}`).join(" ")}"/>`);
            for (const p of visible) parts.push(`<circle cx="${x(p.size).toFixed(1)}" cy="${y(p.busbw).toFixed(1)}" r="3" fill="${color}"/>`);
        }
        const ly = top + 14 + index * 20;
        parts.push(`<line x1="${left + plotWidth + 14}" y1="${ly - 4}" x2="${left + plotWidth + 34}" y2="${ly - 4}" stroke="${color}" stroke-width="2"/>`);
        parts.push(`<text x="${left + plotWidth + 40}" y="${ly}">${escapeXml(s.label)}</text>`);
    });
    parts.push("</svg>");
    return `${parts.join("\n")}\n`;
}

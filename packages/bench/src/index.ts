export {parseSize, perRankCount, sizeSequence} from "./benchSizes.js";
export {busBandwidth} from "./busBandwidth.js";
export type {BenchCollective} from "./busBandwidth.js";
export {averageBusBandwidth, fitNumber, formatBenchTable} from "./formatBenchTable.js";
export type {BenchReport, BenchRow} from "./formatBenchTable.js";
export {formatBytes, plotBusBandwidth} from "./plotBusBandwidth.js";
export type {PlotSeries} from "./plotBusBandwidth.js";
export {formatQuantizeTable, runQuantizeBench} from "./runQuantizeBench.js";
export type {QuantizeBenchOptions, QuantizeBenchRow} from "./runQuantizeBench.js";

export {processIo} from "./CliIo.js";
export type {CliIo} from "./CliIo.js";
export {createProgram} from "./createProgram.js";
export {mixzVersion} from "./mixzVersion.js";
export {ExitCode} from "./ExitCode.js";
export {runCli} from "./runCli.js";

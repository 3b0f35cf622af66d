export {processIo} from "./CliIo.js";
export type {CliIo} from "./CliIo.js";
export {createProgram, mixzVersion} from "./createProgram.js";
export {ExitCode} from "./ExitCode.js";
export {runCli} from "./runCli.js";

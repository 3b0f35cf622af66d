export {processIo} from "./CliIo.js";
export type {CliIo} from "./CliIo.js";
export {createProgram, mixzVersion} from "./createProgram.js";
export {ExitCode} from "./exitCodes.js";
export {runCli} from "./runCli.js";

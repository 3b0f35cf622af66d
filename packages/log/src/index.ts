export {createLogger} from "./createLogger.js";
export type {LogFormat, LoggerOptions, LogLevel, Logger} from "./createLogger.js";

export {ErrorCodes, InputError, MixzError, formatProblem} from "./errors.js";
export type {ErrorCategory, ErrorCode, MixzErrorOptions, Problem, ProblemLocation} from "./errors.js";
export {kMaxFrameBytes, PROTOCOL_VERSION} from "./messages.js";
export type * from "./messages.js";

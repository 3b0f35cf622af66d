export {ErrorCodes, InputError, MixzError, formatProblem} from "./errors.js";
export type {ErrorCategory, ErrorCode, MixzErrorOptions, Problem, ProblemLocation} from "./errors.js";

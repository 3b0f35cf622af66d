export {ErrorCodes, InputError, MixzError, formatProblem} from "./errors.js";
export type {ErrorCategory, ErrorCode, MixzErrorOptions, Problem, ProblemLocation} from "./errors.js";
export {kMaxFrameBytes, PROTOCOL_VERSION} from "./messages.js";
export type * from "./messages.js";
export {parseRankDescriptor} from "./RankDescriptor.js";
export type {RankDescriptor} from "./RankDescriptor.js";
export {
    decodeCoordinatorMessage,
    decodeDaemonMessage,
    encodeMessage,
    kMaxNameChars,
    kMaxTextChars,
    kMaxTimeoutMs,
    kMaxWaitKeys,
    kMaxWorldSize,
    truncateText
} from "./codec.js";
export {wholeNumberProblem} from "./wholeNumberProblem.js";

export {hostFacts, rankEnvironment} from "./rankEnvironment.js";
export type {HostFacts} from "./rankEnvironment.js";
export {readDescriptorLine} from "./readDescriptorLine.js";

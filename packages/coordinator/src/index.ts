export {Coordinator} from "./Coordinator.js";
export {CoordinatorClient} from "./CoordinatorClient.js";
export type {CoordinatorClientOptions, CoordinatorEvent, CoordinatorOptions, PlannedRank} from "./api.js";

export {installRankContext, installedRankContext, kRankContextSymbol} from "./RankContext.js";
export type {RankContext, RankStore} from "./RankContext.js";
export {runtime} from "./runtime.js";

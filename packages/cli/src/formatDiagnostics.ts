import {formatProblem, type Problem} from "@mixz/protocol";

/** One `mixz: warning: …` line per warning, or nothing. */
export function formatWarnings(warnings: readonly Problem[]): string {
    return warnings.map((warning) => `mixz: warning: ${formatProblem(warning)}\n`).join("");
}

/** One `mixz: …` line per problem: the location first, then the JSON path or flag, then what is wrong. */
export function formatProblems(problems: readonly Problem[]): string {
    return problems.map((problem) => `mixz: ${formatProblem(problem)}\n`).join("");
}

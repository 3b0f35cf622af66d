import {ErrorCodes, InputError, wholeNumberProblem} from "@mixz/protocol";

/**
 * A whole-number flag value. Commander hands over strings; `Number("")` is 0 and `parseInt("4abc")`
 * is 4, so neither is safe for user input: only an optional minus sign and digits are accepted.
 */
export function parseIntegerFlag(value: string, flag: string, min = Number.MIN_SAFE_INTEGER): number {
    const number = Number(value.trim());
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(number)) {
        throw new InputError([{code: ErrorCodes.usage, path: flag, message: `'${value}' is not a whole number`}]);
    }
    const problem = wholeNumberProblem(number, min);
    if (problem !== undefined) throw new InputError([{code: ErrorCodes.usage, path: flag, message: problem}]);
    return number;
}

/**
 * DeepSpeed spells some flags with underscores (`--num_gpus`), torchrun with dashes
 * (`--num-gpus`); both are accepted. Giving both with different values is an error.
 */
export function pickAlias<T>(flag: string, values: ReadonlyArray<T | undefined>): T | undefined {
    const given = values.filter((value): value is T => value !== undefined);
    if (given.length > 1 && given.some((value) => value !== given[0])) {
        throw new InputError([{code: ErrorCodes.usage, path: flag, message: `given twice with different values (${given.join(", ")})`}]);
    }
    return given[0];
}

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

/**
 * A duration flag in seconds (fractions allowed: tests use 0.25 s heartbeats), as milliseconds;
 * only digits with an optional decimal part, in (0, 86400].
 */
export function parseSecondsFlag(value: string, flag: string): number {
    const number = Number(value.trim());
    if (!/^\d+(\.\d+)?$/.test(value.trim()) || !(number > 0) || number > 86_400) {
        throw new InputError([{code: ErrorCodes.usage, path: flag, message: `'${value}' is not a number of seconds in (0, 86400]`}]);
    }
    return Math.round(number * 1000);
}

/** A flag that takes one of a few words. */
export function parseChoiceFlag<T extends string>(value: string, flag: string, allowed: readonly T[]): T {
    if (!(allowed as readonly string[]).includes(value)) {
        throw new InputError([{code: ErrorCodes.usage, path: flag, message: `'${value}' is not one of ${allowed.join(", ")}`}]);
    }
    return value as T;
}

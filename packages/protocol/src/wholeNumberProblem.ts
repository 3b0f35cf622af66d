/**
 * Why `value` is not an acceptable count, or undefined when it is: a safe integer (beyond 2^53
 * JSON and JS numbers silently round) within [min, max]. One wording for every flag and field.
 */
export function wholeNumberProblem(value: number, min: number, max: number = Number.MAX_SAFE_INTEGER): string | undefined {
    if (!Number.isSafeInteger(value)) return `${value} is not a whole number`;
    if (value < min) return `${value} is not a whole number ≥ ${min}`;
    if (value > max) return `${value} is more than ${max}`;
    return undefined;
}

import {ErrorCodes, InputError} from "@mixz/protocol";

/**
 * A size flag as nccl-tests reads it: a whole number with an optional K, M or G suffix, 1024-based
 * (`-b 8M` = 8 388 608 bytes). Anything else is refused with the flag's name.
 */
export function parseSize(text: string, flag: string): number {
    const match = /^(\d+)([KMG]?)$/i.exec(text.trim());
    const value = match === null ? NaN : Number(match[1]) * 1024 ** " KMG".indexOf((match[2] || " ").toUpperCase());
    if (match === null || !Number.isSafeInteger(value)) {
        throw new InputError([{code: ErrorCodes.usage, path: flag, message: `invalid size '${text}': a whole number of bytes with an optional K, M or G (1024-based)`}]);
    }
    return value;
}

/**
 * The sizes a run measures, nccl-tests style: from min to max, multiplying by `factor` when it is
 * above 1, else adding `step` bytes (-i). Both ends are inclusive when reached exactly.
 */
export function sizeSequence(min: number, max: number, factor: number, step: number): number[] {
    if (min > max) {
        throw new InputError([{code: ErrorCodes.usage, path: "-b", message: `invalid sizes for 'minbytes' and 'maxbytes': ${min} > ${max}`}]);
    }
    if (factor <= 1 && step <= 0) {
        throw new InputError([{code: ErrorCodes.usage, path: "-f", message: "needs -f above 1 or -i above 0 to step from -b to -e"}]);
    }
    const sizes: number[] = [];
    for (let size = min; size <= max; size = factor > 1 ? size * factor : size + step) {
        sizes.push(size);
        if (factor > 1 && size === 0) break;
    }
    return sizes;
}

/**
 * Elements per rank for a requested total size, as nccl-tests computes it: size / element bytes /
 * ranks, rounded down so that every rank's chunk is a multiple of 16 bytes (tiny sizes become 0).
 */
export function perRankCount(size: number, elementBytes: number, ranks: number): number {
    const count = Math.floor(size / elementBytes / ranks);
    const multiple = Math.max(1, 16 / elementBytes);
    return Math.floor(count / multiple) * multiple;
}

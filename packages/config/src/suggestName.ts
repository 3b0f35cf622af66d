/**
 * Nearest-name suggestions for misspelt keys and values ("did you mean …?").
 *
 * Distance is the unrestricted Damerau–Levenshtein distance (insertions, deletions,
 * substitutions and transpositions of adjacent characters, where a transposed pair may also be
 * edited around), computed on lower-cased names so that a difference of letter case alone counts
 * as nothing. A candidate is suggested when its distance is at most max(2, ⌊length/3⌋) of the
 * name given; the closest wins, the earlier candidate on a tie.
 */

/** The candidate nearest to `name`, or undefined when none is close enough. */
export function suggestName(name: string, candidates: Iterable<string>): string | undefined {
    const wanted = name.toLowerCase();
    const limit = Math.max(2, Math.floor(name.length / 3));
    let best: string | undefined;
    let bestDistance = Number.POSITIVE_INFINITY;
    for (const candidate of candidates) {
        if (candidate === name) continue;
        const distance = damerauLevenshtein(wanted, candidate.toLowerCase());
        if (distance <= limit && distance < bestDistance) {
            best = candidate;
            bestDistance = distance;
        }
    }
    return best;
}

/** Unrestricted Damerau–Levenshtein distance between `a` and `b` (Lowrance–Wagner algorithm). */
export function damerauLevenshtein(a: string, b: string): number {
    const rows = a.length + 2;
    const cols = b.length + 2;
    const infinity = a.length + b.length;
    // table[(i + 1) * cols + (j + 1)] is the distance between a[0, i) and b[0, j); row and
    // column 0 hold `infinity` as sentinels for transpositions that reach before the start.
    const table = new Array<number>(rows * cols).fill(0);
    const at = (i: number, j: number): number => table[i * cols + j] ?? infinity;
    const set = (i: number, j: number, value: number): void => {
        table[i * cols + j] = value;
    };
    set(0, 0, infinity);
    for (let i = 0; i <= a.length; i++) {
        set(i + 1, 0, infinity);
        set(i + 1, 1, i);
    }
    for (let j = 0; j <= b.length; j++) {
        set(0, j + 1, infinity);
        set(1, j + 1, j);
    }
    // lastRowOf.get(c): the last row (1-based index into a) where character c of a was seen.
    const lastRowOf = new Map<string, number>();
    for (let i = 1; i <= a.length; i++) {
        let lastMatchColumn = 0;
        for (let j = 1; j <= b.length; j++) {
            const i1 = lastRowOf.get(b[j - 1]!) ?? 0;
            const j1 = lastMatchColumn;
            let cost = 1;
            if (a[i - 1] === b[j - 1]) {
                cost = 0;
                lastMatchColumn = j;
            }
            set(
                i + 1,
                j + 1,
                Math.min(
                    at(i, j) + cost, // substitution (or match)
                    at(i + 1, j) + 1, // insertion
                    at(i, j + 1) + 1, // deletion
                    at(i1, j1) + (i - i1 - 1) + 1 + (j - j1 - 1) // transposition
                )
            );
        }
        lastRowOf.set(a[i - 1]!, i);
    }
    return at(a.length + 1, b.length + 1);
}

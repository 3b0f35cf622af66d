/**
 * POSIX shell quoting for remote command lines. sshd hands the command to the remote user's login
 * shell as `$SHELL -c <command>`, so every word we build must survive exactly one round of POSIX
 * shell parsing. A single-quoted word is taken literally by the shell, byte for byte (newlines,
 * `$`, backticks, `"`, `\`, `*`, `;` included); the only character that cannot appear inside one
 * is `'` itself, which we write as `'\''` (close the quote, an escaped quote, reopen). Every word is
 * quoted, even when it would not need it: one rule, no "safe character" list to get wrong (DeepSpeed
 * quoted only values with a space, and broke on the rest: launchers.md §1c, PR #7071).
 *
 * Caveat: this targets POSIX shells (sh, dash, bash, zsh, ksh). csh/tcsh treat newlines and `!`
 * inside single quotes differently; remote accounts with such login shells are not supported.
 */

/** Quotes one word for a POSIX shell. NUL cannot be passed through a command line and is rejected. */
export function shellQuote(word: string): string {
    if (word.includes("\0")) throw new RangeError("a shell word cannot contain a NUL character");
    return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** Quotes each word and joins them with spaces. */
export function shellQuoteArgv(words: readonly string[]): string {
    return words.map(shellQuote).join(" ");
}

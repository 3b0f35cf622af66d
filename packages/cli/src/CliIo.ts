/** Where the CLI writes; tests pass their own to capture output without spawning a process. */
export interface CliIo {
    readonly out: (text: string) => void;
    readonly err: (text: string) => void;
}

export const processIo: CliIo = {
    out: (text) => {
        process.stdout.write(text);
    },
    err: (text) => {
        process.stderr.write(text);
    }
};

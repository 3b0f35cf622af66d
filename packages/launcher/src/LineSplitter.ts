import type {Readable} from "node:stream";

/** Longest line passed on whole; longer output is cut into pieces of this size. */
const kMaxLineChars = 16 * 1024;

/**
 * Turns a rank's byte stream into whole lines: chunks may split lines (and UTF-8 characters)
 * anywhere, the last line may have no newline, and a script may write binary garbage. Lines are
 * decoded as UTF-8 with replacement characters, control characters other than tab are replaced
 * (they would corrupt the terminal), and very long lines are cut.
 */
export class LineSplitter {
    private readonly decoder = new TextDecoder("utf-8", {fatal: false});
    private pending = "";

    constructor(private readonly onLine: (line: string) => void) {}

    push(chunk: Uint8Array): void {
        this.take(this.decoder.decode(chunk, {stream: true}));
    }

    /** Flushes a last line without newline. */
    end(): void {
        this.take(this.decoder.decode());
        if (this.pending !== "") this.emit(this.pending);
        this.pending = "";
    }

    private take(text: string): void {
        this.pending += text;
        let newline: number;
        while ((newline = this.pending.indexOf("\n")) >= 0) {
            this.emit(this.pending.slice(0, newline));
            this.pending = this.pending.slice(newline + 1);
        }
        while (this.pending.length > kMaxLineChars) {
            this.emit(this.pending.slice(0, kMaxLineChars));
            this.pending = this.pending.slice(kMaxLineChars);
        }
    }

    private emit(line: string): void {
        let clean = line.replace(/\r$/, "").replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, "\ufffd");
        while (clean.length > kMaxLineChars) {
            this.onLine(clean.slice(0, kMaxLineChars));
            clean = clean.slice(kMaxLineChars);
        }
        this.onLine(clean);
    }
}

/** Feeds a stream into a splitter; resolves when the stream has ended and the last line is out. */
export function splitLines(stream: Readable, onLine: (line: string) => void): Promise<void> {
    const splitter = new LineSplitter(onLine);
    return new Promise((resolve) => {
        stream.on("data", (chunk: Buffer) => splitter.push(chunk));
        let finished = false;
        const finish = (): void => {
            if (finished) return;
            finished = true;
            splitter.end();
            resolve();
        };
        stream.once("end", finish);
        stream.once("close", finish);
        stream.once("error", finish);
    });
}

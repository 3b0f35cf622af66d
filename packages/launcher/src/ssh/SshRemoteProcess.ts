import type {Readable} from "node:stream";
import type {ClientChannel} from "ssh2";
import type {Logger} from "@mixz/log";
import type {RemoteExit, RemoteProcess} from "./api.js";

/**
 * One command in one exec channel (see RemoteProcess). The channel's readable side is stdout, its
 * `stderr` the extended data; its writable side is stdin. exit-status and exit-signal requests are
 * recorded as they arrive and reported once the channel has closed, so that `exit` settles after
 * every byte of output has been delivered.
 */
export class SshRemoteProcess implements RemoteProcess {
    readonly host: string;
    readonly stdout: Readable;
    readonly stderr: Readable;
    readonly exit: Promise<RemoteExit>;
    readonly #channel: ClientChannel;
    readonly #logger: Logger;
    #stdinOpen = true;
    #closed = false;

    constructor(host: string, channel: ClientChannel, logger: Logger) {
        this.host = host;
        this.#channel = channel;
        this.#logger = logger;
        this.stdout = channel;
        this.stderr = channel.stderr;
        let code: number | null = null;
        let signal: string | null = null;
        // ssh2 emits ("exit", code) for exit-status and ("exit", null, "SIGKILL", coreDumped, message) for exit-signal.
        channel.on("exit", (exitCode: number | null, exitSignal?: string) => {
            if (typeof exitCode === "number") code = exitCode;
            if (typeof exitSignal === "string") signal = exitSignal;
        });
        // A write after the remote side closed, or a connection torn down mid-write: not fatal for
        // the launcher, the exit promise tells what happened.
        channel.on("error", (error: Error) => this.#logger.debug({err: error}, "exec channel error"));
        this.exit = new Promise((resolve) => {
            channel.once("close", () => {
                this.#closed = true;
                this.#stdinOpen = false;
                resolve({code, signal});
            });
        });
    }

    writeStdin(text: string): boolean {
        if (!this.#stdinOpen || this.#closed) {
            this.#logger.debug("stdin of a remote command is closed; write dropped");
            return false;
        }
        this.#channel.write(text);
        return true;
    }

    closeStdin(): void {
        if (!this.#stdinOpen) return;
        this.#stdinOpen = false;
        this.#channel.end();
    }

    close(): void {
        if (this.#closed) return;
        this.#stdinOpen = false;
        this.#channel.close();
    }

    /** close(), then wait for the channel to be gone (output not yet read is discarded). */
    async [Symbol.asyncDispose](): Promise<void> {
        this.close();
        this.stdout.resume();
        this.stderr.resume();
        await this.exit;
    }
}

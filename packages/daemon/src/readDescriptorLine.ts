import {readSync} from "node:fs";

const kMaxDescriptorBytes = 16 * 1024 * 1024;

/**
 * Reads the launcher's one-line descriptor from fd 0, synchronously and byte by byte, so that not
 * one byte after the newline is consumed: the rest of stdin belongs to the watchdog, which treats
 * its end-of-file as the launcher's death. Returns null at end-of-file before a full line.
 */
export function readDescriptorLine(fd = 0): string | null {
    const bytes: number[] = [];
    const byte = Buffer.alloc(1);
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    for (;;) {
        let read: number;
        try {
            read = readSync(fd, byte, 0, 1, null);
        } catch (error) {
            // A non-blocking stdin (some spawners set O_NONBLOCK on pipes) has no data yet.
            if ((error as NodeJS.ErrnoException).code === "EAGAIN") {
                Atomics.wait(sleeper, 0, 0, 5);
                continue;
            }
            throw error;
        }
        if (read === 0) return null;
        if (byte[0] === 0x0a) return Buffer.from(bytes).toString("utf8");
        bytes.push(byte[0]!);
        if (bytes.length > kMaxDescriptorBytes) throw new Error(`descriptor line longer than ${kMaxDescriptorBytes} bytes`);
    }
}

import {constants as fsConstants} from "node:fs";
import {open, type FileHandle} from "node:fs/promises";

/**
 * Writes a whole new file (refusing to replace one) and fsyncs it; the caller makes it visible by
 * renaming it, or the directory that holds it.
 */
export async function writeDurably(path: string, text: string): Promise<void> {
    const handle = await open(path, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o644);
    try {
        await handle.writeFile(text, "utf8");
        await handle.sync();
    } finally {
        await handle.close();
    }
}

/**
 * fsync of a directory makes renames in it durable on Linux; filesystems that cannot do it say so
 * with these codes, and are taken at their word.
 */
export async function syncDirectory(directory: string): Promise<void> {
    let handle: FileHandle | undefined;
    try {
        handle = await open(directory, fsConstants.O_RDONLY);
        await handle.sync();
    } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== "EISDIR" && code !== "EINVAL" && code !== "EPERM" && code !== "EBADF") throw error;
    } finally {
        await handle?.close().catch(() => undefined);
    }
}

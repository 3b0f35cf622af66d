/** File errors of the formats and checkpoints: one wording, one code per direction. */
import {ErrorCodes, MixzError} from "@mixz/protocol";

/** The errno code of a Node file error (ENOENT, EACCES…), else its message. */
export function errnoOf(error: unknown): string {
    return (error as NodeJS.ErrnoException | null)?.code ?? (error instanceof Error ? error.message : String(error));
}

/** A failed write as MIXZ_ERR_FILE_WRITE naming the path (MixzErrors pass through: they already say what failed). */
export function writeError(path: string, error: unknown, what = ""): MixzError {
    if (error instanceof MixzError) return error;
    return new MixzError(ErrorCodes.fileWrite, `${path}: cannot write${what === "" ? "" : ` ${what}`} (${errnoOf(error)})`, {category: "infra", context: {path}, cause: error});
}

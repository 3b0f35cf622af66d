/**
 * The shape of the addon's `cudaProbe()` (native/addon/AddonCuda.cc over
 * native/include/mixz/cudalib/driver_api.h): what this machine has for the CUDA backend. Every key
 * is always present; strings that can be absent are null.
 */

/** A shared library the probe looked for (libcuda.so.1, libcublas.so.13, libnccl.so.2). */
export interface NativeCudaLibrary {
    readonly found: boolean;
    /** The file loaded, as the dynamic linker names it; null when not found. */
    readonly path: string | null;
    /**
     * The driver: the CUDA version it supports ("13.0"); cuBLAS: its version ("13.0.2");
     * NCCL: its version ("2.28.3"). Null when not found (or the library did not say).
     */
    readonly version: string | null;
    /** Why it was not found or not usable, naming every place searched; null when found. */
    readonly error: string | null;
}

/** One device the driver shows (CUDA_VISIBLE_DEVICES applied: ordinals are the backend's). */
export interface NativeCudaDevice {
    readonly ordinal: number;
    readonly name: string;
    /** Compute capability, e.g. 9 and 0 for sm_90. */
    readonly major: number;
    readonly minor: number;
    readonly totalBytes: number;
    readonly multiprocessors: number;
    /** "0000:3b:00.0"; "" when the driver did not say. */
    readonly pciBusId: string;
}

export interface NativeCudaProbe {
    /** Whether this build has the CUDA backend (nvcc was found when the addon was built). */
    readonly cudaCompiled: boolean;
    readonly driver: NativeCudaLibrary;
    /** cuDriverGetVersion's code (13000 for CUDA 13.0); 0 without a driver. */
    readonly driverVersion: number;
    /** Why `devices` is empty although a driver was found (cuInit's error); null otherwise. */
    readonly deviceError: string | null;
    readonly devices: readonly NativeCudaDevice[];
    readonly cublas: NativeCudaLibrary;
    readonly nccl: NativeCudaLibrary;
}

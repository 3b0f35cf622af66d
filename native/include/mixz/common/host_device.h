// MIXZ_HD marks element-wise arithmetic shared by the CPU engine and the CUDA kernels: compiled
// by nvcc it is __host__ __device__, compiled by g++ a plain inline function. The CPU engine calls
// these same functions, so a CPU test (native/test/host_device_test.cc, run in CI without a GPU)
// that checks them bit for bit against the CPU engine checks the device's arithmetic too, up to
// the compiler's code generation (nvcc is told not to contract a*b+c into FMAs where exactness
// matters: -fmad=false).
#pragma once

#if defined(__CUDACC__)
#define MIXZ_HD __host__ __device__ __forceinline__
#else
#define MIXZ_HD inline
#endif

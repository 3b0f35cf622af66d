// NOT YET RUN ON A GPU: written and compiled (nvcc, sm_80/sm_90) without a device; the device
// test native/test/cuda/quant_device_test.cu has not been run on real hardware yet.
//
// The block quantizer (mixz/quant/block_quant.h) and the fp32 ↔ fp16/bf16 conversions
// (mixz/tensor/dtype.h) on a CUDA device, producing exactly the CPU's bytes: the same codes and
// scales in the same layout (int8: one byte per element; int4: element 2i in the high nibble of
// byte i, 2i+1 in the low one; one float32 multiplier s = 1/scale per block, block b covering
// elements [b·blockSize, (b+1)·blockSize)), the same dequantized and converted values, NaN payloads
// included. The per-element arithmetic is mixz/quant/block_codes.h and mixz/tensor/half_bits.h,
// the very functions the CPU's scalar kernels run (native/test/host_device_test.cc checks them
// against the CPU engine without a GPU).
//
// Pointers are device memory. Launchers validate their arguments on the host (InvalidArgument, the
// CPU's rules: bits 8 or 4, block size a power of two in [8, 65536], floating-point types), enqueue
// on `stream` and return without synchronizing; launch errors go through MIXZ_CUDA_LAUNCH_CHECK
// (cuda/device_context.h). Buffers must not overlap (as on the CPU). Any alignment works; 16-byte
// aligned buffers take the vectorized paths (cudaMalloc's are 256-byte aligned).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/device_context.h"
#include "mixz/tensor/dtype.h"

namespace mixz::cuda {

// What *firstBadBlock holds after a quantization without NaN or ±inf in its input.
inline constexpr unsigned long long kNoBadBlock = ~0ull;

// Quantizes `elements` values of inputType (fp32, fp16, bf16) into quantizedBytes(padded, bits)
// bytes of codes and blockCount(padded, blockSize) scales; padded ≥ elements (elements past
// `elements` are zero padding, as quant::QuantizeOptions::paddedElements). The CPU rejects
// non-finite input by throwing; a kernel cannot, so: when firstBadBlock (device memory, one
// unsigned long long) is not null, the launcher sets it to kNoBadBlock and the kernel lowers it to
// the index of the first block holding NaN or ±inf; the codes and scales of such blocks are then
// unspecified (as on the CPU). The caller reads it back when it needs to know.
void launchBlockQuantize(const void* input, tensor::DType inputType, std::size_t elements, std::size_t paddedElements,
                         int bits, std::size_t blockSize, std::uint8_t* codes, float* scales,
                         unsigned long long* firstBadBlock, cudaStream_t stream);

// Dequantizes `elements` codes (int8, or packed int4 starting at a byte: a segment of a coalesced
// buffer starting at an even element is codes + offset / 2 and scales + its first block) with
// blockCount(elements, blockSize) scales into outputType (fp32, fp16, bf16): y = float(q) · s,
// rounded to nearest even. Memory-bound: each thread turns 16 codes into 16 values with 16-byte
// loads and stores over a grid-stride loop sized to the device.
void launchBlockDequantize(const std::uint8_t* codes, int bits, const float* scales, std::size_t elements,
                           std::size_t blockSize, void* output, tensor::DType outputType, cudaStream_t stream);

// Converts `elements` values between fp32, fp16 and bf16 (any to any; the same type is a copy),
// exactly as tensor::convert.
void launchConvert(const void* input, tensor::DType inputType, void* output, tensor::DType outputType,
                   std::size_t elements, cudaStream_t stream);

} // namespace mixz::cuda

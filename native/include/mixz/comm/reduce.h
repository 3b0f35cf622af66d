// Element-wise reductions used by reduce-scatter and all-reduce, on fp32, fp16 and bf16.
//
// Every member of a collective reduces the same chunk the same way, so results are reproducible
// bit for bit: sources are combined strictly in the order given (the transports pass them in rank
// order), fp16 and bf16 values are accumulated in fp32 and rounded once (to nearest even) at the
// end, and a mean divides the fp32 sum by the member count. The AVX2 (+F16C) kernels, chosen at run
// time, and the scalar ones give identical bits: same operations, same order, no FMA.
#pragma once

#include <cstddef>
#include <cstdint>

#include "mixz/tensor/dtype.h"

namespace mixz::comm {

enum class ReduceOp : std::uint8_t { kSum = 0, kMean = 1, kMax = 2 };

// "sum", "mean", "max".
const char* reduceOpName(ReduceOp op) noexcept;

// "fp32", "fp16", "bf16", "int8", "int4" (as tensor::dtypeName, without linking the tensor layer).
const char* dtypeLabel(tensor::DType dtype) noexcept;

// Bytes of one element of a reducible type: 4 for fp32, 2 for fp16 and bf16. Throws
// InvalidArgument for the integer types.
std::size_t reducibleElementBytes(tensor::DType dtype);

// dst[i] = srcs[0][i] ⊕ srcs[1][i] ⊕ … ⊕ srcs[n-1][i] for i < count, then / divisor for kMean.
// dst may be one of the sources (the kernels read element i of every source before writing it).
void reduce(tensor::DType dtype, ReduceOp op, void* dst, const void* const* srcs, std::size_t sourceCount,
            std::size_t count, int divisor);

// Whether reduce() uses the AVX2 kernels on this CPU (AVX2 and F16C present, MIXZ_SIMD not "scalar").
bool reduceUsesAvx2() noexcept;

} // namespace mixz::comm

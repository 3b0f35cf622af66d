// Element helpers of the ZeRO engine's storage: partitions, gradients and wire buffers are fp32,
// fp16 or bf16; compute buffers are fp32.
#pragma once

#include <cstddef>

#include "mixz/tensor/dtype.h"

namespace mixz::zero {

// 4 for fp32, 2 for fp16/bf16 (the only dtypes the engine stores).
inline std::size_t elementBytes(tensor::DType dtype) { return dtype == tensor::DType::kFloat32 ? 4 : 2; }

// `elements` values from inputType into outputType (a copy when they are the same).
void convertInto(const void* input, tensor::DType inputType, void* output, tensor::DType outputType, std::size_t elements);

// Whether n values of a float type are all finite (16-bit types: the exponent is not all ones).
bool allFinite(const void* data, tensor::DType type, std::size_t n);

// Quantized blocks that stand for non-finite input: codes 0, scales NaN, so dequantizing gives NaN
// and the overflow check downstream sees it. The quantizer itself refuses non-finite input, and a
// refusal on one rank only would leave the ranks' collectives out of step.
void poisonBlocks(void* codes, std::size_t codeBytes, float* scales, std::size_t scaleCount);

} // namespace mixz::zero

#include "mixz/zero/element_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace mixz::zero {

using tensor::DType;

void convertInto(const void* input, DType inputType, void* output, DType outputType, std::size_t elements) {
    tensor::convertElements(input, inputType, output, outputType, elements);
}

bool allFinite(const void* data, DType type, std::size_t n) {
    if (type == DType::kFloat32) {
        const float* values = static_cast<const float*>(data);
        bool finite = true;
        for (std::size_t i = 0; i < n; ++i) finite &= std::isfinite(values[i]);
        return finite;
    }
    const std::uint16_t mask = type == DType::kFloat16 ? 0x7C00 : 0x7F80;
    const std::uint16_t* bits = static_cast<const std::uint16_t*>(data);
    bool finite = true;
    for (std::size_t i = 0; i < n; ++i) finite &= (bits[i] & mask) != mask;
    return finite;
}

void poisonBlocks(void* codes, std::size_t codeBytes, float* scales, std::size_t scaleCount) {
    std::memset(codes, 0, codeBytes);
    std::fill(scales, scales + scaleCount, std::numeric_limits<float>::quiet_NaN());
}

} // namespace mixz::zero

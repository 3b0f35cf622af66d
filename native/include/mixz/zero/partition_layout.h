// How a group of parameters is cut into partitions over M members (the world for primaries, the
// hpZ group for secondaries), unquantized and as int8 blocks.
#pragma once

#include <cstddef>
#include <vector>

namespace mixz::zero {

// Param k's member m holds elements [m·part[k], (m+1)·part[k]) of the flattened tensor (zero past
// its end). Unquantized, a member's partitions lie back to back (off[k], in elements); quantized
// (int8), partition k's `part` codes lie at qoff[k] bytes and its blockCount(part) scales at
// soff[k] floats in the scale region that follows all codes (at scaleBase bytes, 4-aligned).
struct Layout {
    int members = 1;
    std::vector<std::size_t> part;
    std::vector<std::size_t> off;
    std::size_t elements = 0;
    std::vector<std::size_t> qoff;
    std::vector<std::size_t> soff;
    std::size_t scaleBase = 0;
    std::size_t scaleCount = 0;

    // Bytes of one member's partitions: int8 codes and scales, or `elements` of `eb` bytes each.
    std::size_t bytes(bool quantized, std::size_t eb) const {
        return quantized ? scaleBase + scaleCount * sizeof(float) : elements * eb;
    }
};

// The layout of parameters of `numels` elements over `members`, int8 blocks of `blockSize`.
Layout makeLayout(const std::vector<std::size_t>& numels, int members, std::size_t blockSize);

inline std::size_t alignUp(std::size_t value, std::size_t to) { return (value + to - 1) / to * to; }

// Elements per member of a tensor of `numel` elements over `members`: ceil(numel / members).
inline std::size_t partitionSize(std::size_t numel, std::size_t members) { return (numel + members - 1) / members; }

} // namespace mixz::zero

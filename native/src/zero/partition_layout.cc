#include "mixz/zero/partition_layout.h"

#include "mixz/quant/block_quant.h"

namespace mixz::zero {

Layout makeLayout(const std::vector<std::size_t>& numels, int members, std::size_t blockSize) {
    Layout layout;
    layout.members = members;
    std::size_t codes = 0;
    for (std::size_t numel : numels) {
        const std::size_t part = partitionSize(numel, static_cast<std::size_t>(members));
        layout.part.push_back(part);
        layout.off.push_back(layout.elements);
        layout.elements += part;
        // The partition is quantized as zero-padded to whole blocks (zeropp.md P4/P5), but the
        // padding's codes are zeros by construction and never enter a block's absmax, so they are
        // neither stored nor sent: `part` codes and blockCount(part) scales per parameter. (With a
        // large block and small partitions, sending the padding cost more than 16-bit.)
        layout.qoff.push_back(codes);
        codes += quant::quantizedBytes(part, 8);
        layout.soff.push_back(layout.scaleCount);
        layout.scaleCount += quant::blockCount(part, blockSize);
    }
    layout.scaleBase = alignUp(codes, 4);
    return layout;
}

} // namespace mixz::zero

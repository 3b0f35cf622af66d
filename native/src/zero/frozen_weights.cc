#include "mixz/zero/frozen_weights.h"

#include <cstdint>
#include <vector>

namespace mixz::zero {

QuantizeReport quantizeFrozen(ParameterStore& store, Fetcher& fetcher, Secondaries& secondaries, CollectiveRunner& runner) {
    QuantizeReport report;
    const std::size_t eb = store.eb();
    for (std::size_t u = 1; u < store.units.size(); ++u) {
        for (std::size_t gi = 0; gi < store.units[u].groups.size(); ++gi) {
            Group& g = store.units[u].groups[gi];
            if (!g.frozen || g.quantized || g.full == 0) continue;
            report.parameters += g.params.size();
            report.bytesBefore += g.data.size() + (g.secondaryValid ? g.secondaryData.size() : 0);
            // The real values, gathered exactly (16-bit → fp32 is exact) into host memory, for the
            // secondary.
            std::vector<float> real;
            if (secondaries.on()) real.resize(g.full);
            float* values = secondaries.on() ? real.data() : nullptr;
            if (values != nullptr) runner.submit([&fetcher, u, gi, values] { fetcher.gatherToHost(u, gi, values, /*exact=*/true); }).get();
            // Quantized on the host from the partition's values, then stored where the state lives.
            std::vector<std::uint8_t> partition, hostBlob;
            const std::uint8_t* values16 = store.hostRead(g.data.data(), g.data.size(), partition);
            const std::size_t blobBytes = g.primary.bytes(true, eb);
            backend::Block blob;
            blob.assign(store.backend(), blobBytes);
            std::uint8_t* out = store.hostWrite(blob.data(), blobBytes, hostBlob, false);
            for (std::size_t k = 0; k < g.params.size(); ++k) {
                const std::size_t i = g.params[k];
                store.quantizeInto(values16 + g.primary.off[k] * eb, store.dtype(), store.sliceLength(i), g.primary.part[k], out,
                                   g.primary, k);
            }
            store.hostCommit(blob.data(), blobBytes, hostBlob);
            g.data.swap(blob);
            g.quantized = true;
            if (values != nullptr) secondaries.build(g, values);
            for (std::size_t i : g.params) store.params[i].quantized = true;
            report.bytesAfter += g.data.size() + (g.secondaryValid ? g.secondaryData.size() : 0);
        }
    }
    return report;
}

} // namespace mixz::zero

#include "mixz/model/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "mixz/common/counter_random.h"

namespace mixz::model {

int sampleToken(const float* row, std::size_t V, const SamplingOptions& options, std::size_t b, int step,
                std::vector<std::pair<float, int>>& ranked) {
    if (options.temperature <= 0) return static_cast<int>(std::max_element(row, row + V) - row);
    for (std::size_t v = 0; v < V; ++v) ranked[v] = {row[v], static_cast<int>(v)};
    // Most likely first; ties by the lower id, so every rank orders alike.
    const auto before = [](const auto& a, const auto& c) { return a.first > c.first || (a.first == c.first && a.second < c.second); };
    const bool nucleus = options.topP < 1.0;
    std::size_t keep = V;
    if (options.topK > 0 && static_cast<std::size_t>(options.topK) < V) {
        keep = static_cast<std::size_t>(options.topK);
        std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(keep), ranked.end(), before);
    } else if (nucleus) {
        std::sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(V), before);
    }
    float top = -std::numeric_limits<float>::infinity();
    for (std::size_t v = 0; v < keep; ++v) top = std::max(top, ranked[v].first);
    double total = 0;
    std::vector<double> weights(keep);
    for (std::size_t v = 0; v < keep; ++v) total += (weights[v] = std::exp((ranked[v].first - top) / options.temperature));
    if (nucleus) {
        // The shortest prefix of the ranking whose probability reaches p (at least one token).
        double cumulative = 0;
        std::size_t cut = keep;
        for (std::size_t v = 0; v < keep; ++v) {
            cumulative += weights[v];
            if (cumulative >= options.topP * total) {
                cut = v + 1;
                break;
            }
        }
        keep = cut;
        total = 0;
        for (std::size_t v = 0; v < keep; ++v) total += weights[v];
    }
    const std::uint64_t bits = mix(options.seed ^ mix(b * 0x100000001B3ull + static_cast<std::uint64_t>(step) * 0x9E3779B97F4A7C15ull + 11));
    double target = static_cast<double>(bits >> 11) / 9007199254740992.0 * total;
    int chosen = ranked[keep - 1].second;
    for (std::size_t v = 0; v < keep; ++v) {
        target -= weights[v];
        if (target < 0) {
            chosen = ranked[v].second;
            break;
        }
    }
    return chosen;
}

} // namespace mixz::model

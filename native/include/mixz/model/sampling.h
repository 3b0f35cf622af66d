// Choosing the next token from a row of logits (generation): greedy, or sampled with a
// temperature, an optional top-k and an optional top-p (nucleus: the most likely tokens whose
// probabilities first reach p, as Hugging Face's TopPLogitsWarper keeps them, after top-k), from a
// counter-based draw so that every rank picks the same token without communicating.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace mixz::model {

struct SamplingOptions {
    double temperature = 1.0; // ≤ 0: greedy (the first largest logit)
    int topK = 0;             // 0: no limit
    double topP = 1.0;        // in (0, 1]; 1: no limit
    std::uint64_t seed = 0;
};

// The token for sequence `sequence` at generation step `step` from `vocab` logits. `ranked` is
// scratch of at least `vocab` entries, reused between calls.
int sampleToken(const float* logits, std::size_t vocab, const SamplingOptions& options, std::size_t sequence, int step,
                std::vector<std::pair<float, int>>& ranked);

} // namespace mixz::model

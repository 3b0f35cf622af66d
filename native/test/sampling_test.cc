// Core tests of mixz/model/sampling (generation's choice of the next token), without Node: greedy
// is the first largest logit; topP = 1 draws exactly what sampling without a nucleus cut draws
// (the same token for every seed); a tiny topP is greedy; every token drawn with topP = p lies in
// the nucleus an independent implementation computes (the most likely tokens whose probabilities
// first reach p, ties by the lower id), after topK when both are given; and the draw depends only
// on (seed, sequence, step).
//
// Build and run from the repository root:
//
//   g++ -std=c++17 -O2 -Wall -Wextra -Inative/include -o /tmp/mixz-sampling-test
//       native/test/sampling_test.cc native/src/model/sampling.cc
//
// (one command line).
//   /tmp/mixz-sampling-test
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "mixz/model/sampling.h"

using mixz::model::SamplingOptions;
using mixz::model::sampleToken;

namespace {

int failures = 0;

void check(bool ok, const char* what) {
    if (!ok) {
        ++failures;
        std::printf("FAIL %s\n", what);
    }
}

// The nucleus by the definition: sort by logit (ties: lower id first), keep topK, softmax with the
// temperature, the shortest prefix whose probability reaches p.
std::set<int> nucleus(const std::vector<float>& logits, double temperature, int topK, double p) {
    std::vector<int> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    if (topK > 0 && static_cast<std::size_t>(topK) < order.size()) order.resize(static_cast<std::size_t>(topK));
    const double top = logits[order[0]];
    double total = 0;
    for (int v : order) total += std::exp((logits[v] - top) / temperature);
    std::set<int> kept;
    double cumulative = 0;
    for (int v : order) {
        kept.insert(v);
        cumulative += std::exp((logits[v] - top) / temperature);
        if (cumulative >= p * total) break;
    }
    return kept;
}

} // namespace

int main() {
    std::mt19937 random(7);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::vector<std::pair<float, int>> ranked;
    for (int trial = 0; trial < 200; ++trial) {
        const std::size_t vocab = 1 + static_cast<std::size_t>(trial * 37 % 300);
        std::vector<float> logits(vocab);
        for (float& x : logits) x = normal(random);
        if (trial % 5 == 0 && vocab > 3) logits[1] = logits[2] = logits[0]; // ties
        ranked.assign(vocab, {});
        const int argmax = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());

        SamplingOptions greedy;
        greedy.temperature = 0;
        check(sampleToken(logits.data(), vocab, greedy, 0, 0, ranked) == argmax, "greedy is the first largest logit");

        for (int topK : {0, 5}) {
            for (std::uint64_t seed = 0; seed < 20; ++seed) {
                SamplingOptions plain;
                plain.temperature = 0.8;
                plain.topK = topK;
                plain.seed = seed;
                SamplingOptions unit = plain;
                unit.topP = 1.0;
                const int a = sampleToken(logits.data(), vocab, plain, 3, static_cast<int>(seed), ranked);
                const int b = sampleToken(logits.data(), vocab, unit, 3, static_cast<int>(seed), ranked);
                check(a == b, "topP = 1 draws what sampling without a cut draws");
                check(a == sampleToken(logits.data(), vocab, plain, 3, static_cast<int>(seed), ranked), "a draw repeats");

                SamplingOptions tiny = plain;
                tiny.topP = 1e-12;
                const std::set<int> one = nucleus(logits, tiny.temperature, topK, tiny.topP);
                check(one.size() == 1 && sampleToken(logits.data(), vocab, tiny, 3, static_cast<int>(seed), ranked) == *one.begin(),
                      "a tiny topP keeps only the most likely token");

                for (double p : {0.3, 0.6, 0.9}) {
                    SamplingOptions cut = plain;
                    cut.topP = p;
                    const std::set<int> allowed = nucleus(logits, cut.temperature, topK, p);
                    const int chosen = sampleToken(logits.data(), vocab, cut, 1, static_cast<int>(seed), ranked);
                    check(allowed.count(chosen) == 1, "a topP draw lies in the nucleus");
                }
            }
        }
    }
    // A nucleus of more than one token is sampled, not always its head: over many steps with
    // p = 0.9 on flat logits, several tokens appear.
    {
        std::vector<float> flat(10, 0.0f);
        ranked.assign(flat.size(), {});
        SamplingOptions cut;
        cut.topP = 0.9;
        std::set<int> seen;
        for (int step = 0; step < 200; ++step) seen.insert(sampleToken(flat.data(), flat.size(), cut, 0, step, ranked));
        check(seen.size() >= 5 && !seen.count(9), "p = 0.9 of ten equal tokens draws among the first nine");
    }
    std::printf("%s (%d failures)\n", failures == 0 ? "sampling_test: OK" : "sampling_test: FAILED", failures);
    return failures == 0 ? 0 : 1;
}

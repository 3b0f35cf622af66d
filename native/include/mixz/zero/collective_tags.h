// The tags of the engine's collectives, one per kind of collective, so that two collectives in
// flight on one communicator can never be confused. Every collective of mixz::zero uses one of
// these and nothing else; the TypeScript side keeps its own tags (checkpoints, group building)
// apart from this range. One constant per line, `inline constexpr std::uint32_t kName = value;`
// (a test parses this file with the regex `k\w+ = (\d+);`).
#pragma once

#include <cstdint>

namespace mixz::zero::tags {

inline constexpr std::uint32_t kWorldGather = 7001; // parameter all-gather over the world (primaries)
inline constexpr std::uint32_t kGradientReduceScatter = 7002; // gradient reduce-scatter over the world
inline constexpr std::uint32_t kGradNormAllreduce = 7003; // all-reduce of the squared gradient norm in step()
inline constexpr std::uint32_t kHpzGather = 7004; // parameter all-gather over the hpZ group (secondaries)
inline constexpr std::uint32_t kQgzNodeReduceScatter = 7005; // qgZ level 1: fp32 reduce-scatter inside the node
inline constexpr std::uint32_t kQgzCrossGather = 7006; // qgZ level 2: int4 all-gather across nodes

} // namespace mixz::zero::tags

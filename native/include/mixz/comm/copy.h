// Byte copies of the shared-memory transport: memcpy, or AVX2 kernels with non-temporal
// ("streaming") stores for outputs too large to stay in cache, and a fused copy that reads its
// source once and writes two destinations (an all-gather member's own chunk goes to its ring
// entry and to its output in one pass).
//
// Streaming stores skip the read-for-ownership of each destination line and leave the caches to
// the data still to come; they pay off when the destination is large and not read again soon.
#pragma once

#include <cstddef>

namespace mixz::comm {

// dst = src (n bytes); streaming selects non-temporal stores (when the CPU has AVX2).
void copyBytes(void* dst, const void* src, std::size_t n, bool streaming);

// first = src and second = src (n bytes each) in one pass over src; `streaming` applies to
// `second` only.
void copyBytesTwice(void* first, void* second, const void* src, std::size_t n, bool streaming);

// Orders earlier streaming stores before later stores (an sfence); call before publishing data
// written with streaming stores to another thread.
void streamingFence();

// Output size from which the shared-memory transport uses streaming stores: MIXZ_SHM_STREAM_BYTES
// when set, else 4 MiB.
std::size_t streamingThreshold();

} // namespace mixz::comm

#include "mixz/comm/copy.h"

#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace mixz::comm {

namespace {

bool hasAvx2() {
    static const bool avx2 = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    }();
    return avx2;
}

// Bytes until `p` is 32-byte aligned.
std::size_t headBytes(const void* p) { return (32 - (reinterpret_cast<std::uintptr_t>(p) & 31)) & 31; }

__attribute__((target("avx2"))) void streamCopy(std::uint8_t* dst, const std::uint8_t* src, std::size_t n) {
    std::size_t head = headBytes(dst);
    if (head > n) head = n;
    std::memcpy(dst, src, head);
    dst += head;
    src += head;
    n -= head;
    std::size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
        const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 32));
        const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 64));
        const __m256i d = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 96));
        _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i), a);
        _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + 32), b);
        _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + 64), c);
        _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + 96), d);
    }
    std::memcpy(dst + i, src + i, n - i);
}

// `second`'s store: non-temporal when Stream (the choice is made at compile time, so the loop
// below carries no branch).
template <bool Stream>
__attribute__((target("avx2"))) inline void storeSecond(std::uint8_t* at, __m256i value) {
    if constexpr (Stream) {
        _mm256_stream_si256(reinterpret_cast<__m256i*>(at), value);
    } else {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(at), value);
    }
}

// Copies whole 128-byte blocks of src to first (ordinary stores) and to second; returns the bytes
// copied.
template <bool Stream>
__attribute__((target("avx2"))) std::size_t copyBlocksTwice(std::uint8_t* first, std::uint8_t* second,
                                                            const std::uint8_t* src, std::size_t n) {
    std::size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
        const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 32));
        const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 64));
        const __m256i d = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 96));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(first + i), a);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(first + i + 32), b);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(first + i + 64), c);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(first + i + 96), d);
        storeSecond<Stream>(second + i, a);
        storeSecond<Stream>(second + i + 32, b);
        storeSecond<Stream>(second + i + 64, c);
        storeSecond<Stream>(second + i + 96, d);
    }
    return i;
}

__attribute__((target("avx2"))) void copyTwice(std::uint8_t* first, std::uint8_t* second, const std::uint8_t* src,
                                               std::size_t n, bool streaming) {
    std::size_t head = headBytes(second);
    if (head > n) head = n;
    std::memcpy(first, src, head);
    std::memcpy(second, src, head);
    first += head;
    second += head;
    src += head;
    n -= head;
    const std::size_t i = streaming ? copyBlocksTwice<true>(first, second, src, n) : copyBlocksTwice<false>(first, second, src, n);
    std::memcpy(first + i, src + i, n - i);
    std::memcpy(second + i, src + i, n - i);
}

} // namespace

void copyBytes(void* dst, const void* src, std::size_t n, bool streaming) {
    if (streaming && n >= 1024 && hasAvx2()) {
        streamCopy(static_cast<std::uint8_t*>(dst), static_cast<const std::uint8_t*>(src), n);
    } else {
        std::memcpy(dst, src, n);
    }
}

void copyBytesTwice(void* first, void* second, const void* src, std::size_t n, bool streaming) {
    if (n >= 1024 && hasAvx2()) {
        copyTwice(static_cast<std::uint8_t*>(first), static_cast<std::uint8_t*>(second),
                  static_cast<const std::uint8_t*>(src), n, streaming);
    } else {
        std::memcpy(first, src, n);
        std::memcpy(second, first, n);
    }
}

void streamingFence() { _mm_sfence(); }

std::size_t streamingThreshold() {
    static const std::size_t threshold = [] {
        if (const char* text = std::getenv("MIXZ_SHM_STREAM_BYTES"); text != nullptr && *text != '\0') {
            return static_cast<std::size_t>(std::strtoull(text, nullptr, 10));
        }
        // Measured on a 2-core Sapphire Rapids VM: from 8 MiB of all-gather output up, streaming
        // stores beat regular ones by 10-40 % (the output is not read again soon, and the
        // read-for-ownership of regular stores costs as much as the data).
        return std::size_t{4} << 20;
    }();
    return threshold;
}

} // namespace mixz::comm

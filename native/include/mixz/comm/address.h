// What one rank tells every other rank between prepare() and connect(): the bytes JS exchanges
// through the coordinator's store. Opaque to JS; versioned, and checked on decode.
//
// Layout (little endian): "MIXZADR1", then u32 rank, worldSize, pid, transport; strings (u16 length
// + bytes) host, jobId, bootId, shmName; u32 pair count, then per pair u32 peer rank + u16 length +
// Gloo address bytes of this rank's pair for that peer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mixz::comm {

struct RankAddress {
    int rank = -1;
    int worldSize = 0;
    std::int32_t pid = 0;
    std::uint32_t transport = 0; // Transport, as chosen by that rank
    std::string host;
    std::string jobId;
    // /proc/sys/kernel/random/boot_id: two ranks claiming one host must share a kernel (and so
    // /dev/shm) for the shared-memory transport to work.
    std::string bootId;
    // Name of the shared-memory segment this rank created as its host's leader; empty otherwise.
    std::string shmName;
    // Gloo address of this rank's pair for peer p, at index p; empty where there is none.
    std::vector<std::vector<std::uint8_t>> pairs;
};

std::vector<std::uint8_t> encodeAddress(const RankAddress& address);

// Throws InvalidArgument (naming `what`, e.g. "address of rank 3") for bytes that are not an
// address of this format.
RankAddress decodeAddress(const std::vector<std::uint8_t>& bytes, const std::string& what);

} // namespace mixz::comm

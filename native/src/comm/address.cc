#include "mixz/comm/address.h"

#include <cstring>

#include "mixz/common/error.h"

namespace mixz::comm {

namespace {

constexpr char kMagic[8] = {'M', 'I', 'X', 'Z', 'A', 'D', 'R', '1'};

class Writer {
public:
    void u32(std::uint32_t value) {
        for (int i = 0; i < 4; ++i) bytes_.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
    }
    void u16(std::uint16_t value) {
        bytes_.push_back(static_cast<std::uint8_t>(value));
        bytes_.push_back(static_cast<std::uint8_t>(value >> 8));
    }
    void blob(const std::uint8_t* data, std::size_t size, const char* what) {
        MIXZ_ENFORCE(size <= 0xFFFF, what, " is too long (", size, " bytes)");
        u16(static_cast<std::uint16_t>(size));
        bytes_.insert(bytes_.end(), data, data + size);
    }
    void string(const std::string& text, const char* what) {
        blob(reinterpret_cast<const std::uint8_t*>(text.data()), text.size(), what);
    }
    void raw(const void* data, std::size_t size) {
        const auto* p = static_cast<const std::uint8_t*>(data);
        bytes_.insert(bytes_.end(), p, p + size);
    }
    std::vector<std::uint8_t> take() { return std::move(bytes_); }

private:
    std::vector<std::uint8_t> bytes_;
};

class Reader {
public:
    Reader(const std::vector<std::uint8_t>& bytes, const std::string& what) : bytes_(bytes), what_(what) {}

    void need(std::size_t size) {
        if (position_ + size > bytes_.size()) {
            MIXZ_THROW(InvalidArgument, what_, " is truncated (", bytes_.size(), " bytes)");
        }
    }
    std::uint32_t u32() {
        need(4);
        std::uint32_t value = 0;
        for (int i = 0; i < 4; ++i) value |= static_cast<std::uint32_t>(bytes_[position_ + i]) << (8 * i);
        position_ += 4;
        return value;
    }
    std::uint16_t u16() {
        need(2);
        const std::uint16_t value = static_cast<std::uint16_t>(bytes_[position_] | (bytes_[position_ + 1] << 8));
        position_ += 2;
        return value;
    }
    std::vector<std::uint8_t> blob() {
        const std::size_t size = u16();
        need(size);
        std::vector<std::uint8_t> data(bytes_.begin() + static_cast<std::ptrdiff_t>(position_),
                                       bytes_.begin() + static_cast<std::ptrdiff_t>(position_ + size));
        position_ += size;
        return data;
    }
    std::string string() {
        const std::vector<std::uint8_t> data = blob();
        return std::string(data.begin(), data.end());
    }
    bool atEnd() const { return position_ == bytes_.size(); }

private:
    const std::vector<std::uint8_t>& bytes_;
    const std::string& what_;
    std::size_t position_ = 0;
};

} // namespace

std::vector<std::uint8_t> encodeAddress(const RankAddress& address) {
    Writer out;
    out.raw(kMagic, sizeof kMagic);
    out.u32(static_cast<std::uint32_t>(address.rank));
    out.u32(static_cast<std::uint32_t>(address.worldSize));
    out.u32(static_cast<std::uint32_t>(address.pid));
    out.u32(address.transport);
    out.string(address.host, "host");
    out.string(address.jobId, "jobId");
    out.string(address.bootId, "boot id");
    out.string(address.shmName, "segment name");
    std::uint32_t pairs = 0;
    for (const auto& pair : address.pairs) pairs += pair.empty() ? 0 : 1;
    out.u32(pairs);
    for (std::size_t peer = 0; peer < address.pairs.size(); ++peer) {
        if (address.pairs[peer].empty()) continue;
        out.u32(static_cast<std::uint32_t>(peer));
        out.blob(address.pairs[peer].data(), address.pairs[peer].size(), "pair address");
    }
    return out.take();
}

RankAddress decodeAddress(const std::vector<std::uint8_t>& bytes, const std::string& what) {
    if (bytes.size() < sizeof kMagic || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
        MIXZ_THROW(InvalidArgument, what, " is not a mixz communicator address (", bytes.size(),
                   " bytes; expected what prepare() returned on that rank)");
    }
    std::vector<std::uint8_t> rest(bytes.begin() + sizeof kMagic, bytes.end());
    Reader in(rest, what);
    RankAddress address;
    address.rank = static_cast<int>(in.u32());
    address.worldSize = static_cast<int>(in.u32());
    address.pid = static_cast<std::int32_t>(in.u32());
    address.transport = in.u32();
    address.host = in.string();
    address.jobId = in.string();
    address.bootId = in.string();
    address.shmName = in.string();
    if (address.worldSize <= 0 || address.worldSize > (1 << 20) || address.rank < 0 ||
        address.rank >= address.worldSize) {
        MIXZ_THROW(InvalidArgument, what, " says rank ", address.rank, " of ", address.worldSize);
    }
    const std::uint32_t pairs = in.u32();
    address.pairs.resize(static_cast<std::size_t>(address.worldSize));
    for (std::uint32_t i = 0; i < pairs; ++i) {
        const std::uint32_t peer = in.u32();
        if (peer >= static_cast<std::uint32_t>(address.worldSize)) {
            MIXZ_THROW(InvalidArgument, what, " has a pair for rank ", peer, " outside the world");
        }
        address.pairs[peer] = in.blob();
    }
    if (!in.atEnd()) MIXZ_THROW(InvalidArgument, what, " has trailing bytes");
    return address;
}

} // namespace mixz::comm

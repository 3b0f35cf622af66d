#include "mixz/comm/gloo_transport.h"

#include <gloo/common/error.h>
#include <gloo/transport/context.h>
#include <gloo/transport/device.h>
#include <gloo/transport/pair.h>
#include <gloo/transport/tcp/attr.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>

#include <algorithm>
#include <cstring>

#include "mixz/common/error.h"

namespace mixz::comm {

namespace {

using UnboundBuffer = gloo::transport::UnboundBuffer;

// Gloo prefixes its messages with "[/build/.../pair.cc:123] "; the location means nothing to a user.
std::string glooText(const std::exception& error) {
    std::string text = error.what();
    if (!text.empty() && text[0] == '[') {
        const std::size_t close = text.find("] ");
        if (close != std::string::npos) text = text.substr(close + 2);
    }
    return text;
}

[[noreturn]] void throwFromGloo(const OpContext& op, const Peer& peer, const std::exception& error) {
    const std::string text = glooText(error);
    if (text.find("Timed out") != std::string::npos || text.find("timeout") != std::string::npos) {
        throwTimeout(op, peer);
    }
    if (text.find("closed") != std::string::npos || text.find("reset") != std::string::npos ||
        text.find("EOF") != std::string::npos || text.find("Broken pipe") != std::string::npos) {
        throwPeerError(op, peer, "connection closed (" + text + ")");
    }
    throwPeerError(op, peer, text);
}

std::chrono::milliseconds waitBudget(const OpContext& op) {
    // Gloo treats a zero timeout like any other; keep at least 1 ms so a wait that is already
    // satisfied still succeeds.
    return std::max(op.remaining(), std::chrono::milliseconds(1));
}

// Waits for one receive on `buffer` from `peer`.
void waitRecv(UnboundBuffer& buffer, const Peer& peer, const OpContext& op) {
    try {
        buffer.waitRecv(nullptr, waitBudget(op));
    } catch (const gloo::Exception& error) {
        throwFromGloo(op, peer, error);
    }
}

void waitSend(UnboundBuffer& buffer, const Peer& peer, const OpContext& op) {
    try {
        buffer.waitSend(nullptr, waitBudget(op));
    } catch (const gloo::Exception& error) {
        throwFromGloo(op, peer, error);
    }
}

struct Transfer {
    std::unique_ptr<UnboundBuffer> buffer;
    int member = -1;
};

} // namespace

GlooMesh::GlooMesh(int rank, int size, const std::string& bindAddress, std::chrono::milliseconds connectTimeout)
    : rank_(rank) {
    try {
        gloo::transport::tcp::attr attr(bindAddress.c_str());
        device_ = gloo::transport::tcp::CreateDevice(attr);
    } catch (const std::exception& error) {
        MIXZ_THROW(InvalidArgument, "cannot create a Gloo TCP device on '", bindAddress, "': ", glooText(error),
                   " (the address must name this machine; set bindAddress to one of its IP addresses)");
    }
    context_ = device_->createContext(rank, size);
    // A pair's connect() waits 5 times the context timeout (Gloo's rule for initial connects).
    const auto pairTimeout = std::max<std::chrono::milliseconds>(
        std::chrono::milliseconds(1), std::chrono::milliseconds((connectTimeout.count() + 4) / 5));
    context_->setTimeout(pairTimeout);
}

GlooMesh::~GlooMesh() {
    // Close every pair before the device's loop goes away; peers then see the connection closed.
    if (context_) {
        for (int r = 0; r < context_->size; ++r) {
            if (r == rank_) continue;
            try {
                auto& pair = context_->getPair(r);
                if (pair) pair->close();
            } catch (...) {
                // getPair throws for a rank without a pair; nothing to close.
            }
        }
    }
    context_.reset();
    device_.reset();
}

std::vector<std::uint8_t> GlooMesh::preparePair(int peer) {
    auto& pair = context_->createPair(peer);
    const std::vector<char> bytes = pair->address().bytes();
    return std::vector<std::uint8_t>(bytes.begin(), bytes.end());
}

void GlooMesh::connectPair(const Peer& peer, const std::vector<std::uint8_t>& address, const OpContext& op) {
    try {
        auto& pair = context_->getPair(peer.rank);
        pair->connect(std::vector<char>(address.begin(), address.end()));
    } catch (const gloo::Exception& error) {
        const std::string text = glooText(error);
        if (text.find("timeout") != std::string::npos || text.find("Timed out") != std::string::npos) {
            throwTimeout(op, peer, "connecting over TCP (" + text + ")");
        }
        throwPeerError(op, peer, "cannot connect over TCP: " + text);
    }
}

std::string GlooMesh::deviceDescription() const { return device_->str(); }

GlooDomain::GlooDomain(std::shared_ptr<GlooMesh> mesh, std::vector<Peer> members, int me, std::uint16_t commId)
    : mesh_(std::move(mesh)), members_(std::move(members)), me_(me), commId_(commId) {}

std::uint64_t GlooDomain::slot(const OpContext& op, std::uint8_t phase) const {
    return (static_cast<std::uint64_t>(commId_) << 48) | (static_cast<std::uint64_t>(op.kind) << 40) |
           (static_cast<std::uint64_t>(op.tag) << 8) | phase;
}

void GlooDomain::allgatherv(std::uint8_t* output, const std::vector<std::size_t>& offsets,
                            const std::vector<std::size_t>& bytes, const std::uint8_t* source, const OpContext& op,
                            std::uint8_t phase) {
    const int n = size();
    auto& context = mesh_->context();
    const std::uint64_t tag = slot(op, phase);
    std::vector<Transfer> receives;
    std::vector<Transfer> sends;
    // Receives first, so that every peer's data can flow as soon as it is sent.
    for (int step = 1; step < n; ++step) {
        const int m = (me_ + step) % n;
        if (bytes[m] == 0) continue;
        Transfer transfer{context.createUnboundBuffer(output + offsets[m], bytes[m]), m};
        transfer.buffer->recv(members_[m].rank, tag);
        receives.push_back(std::move(transfer));
    }
    if (bytes[me_] > 0) {
        for (int step = 1; step < n; ++step) {
            const int m = (me_ + step) % n;
            // Gloo only reads a buffer it sends from.
            Transfer transfer{context.createUnboundBuffer(const_cast<std::uint8_t*>(source), bytes[me_]), m};
            transfer.buffer->send(members_[m].rank, tag);
            sends.push_back(std::move(transfer));
        }
        std::uint8_t* own = output + offsets[me_];
        if (own != source) std::memcpy(own, source, bytes[me_]);
    }
    for (Transfer& transfer : receives) waitRecv(*transfer.buffer, members_[transfer.member], op);
    for (Transfer& transfer : sends) waitSend(*transfer.buffer, members_[transfer.member], op);
}

void GlooDomain::reduceScatter(const std::uint8_t* input, std::uint8_t* output, const std::vector<std::size_t>& counts,
                               const std::vector<std::size_t>& displs, tensor::DType dtype, ReduceOp reduceOp,
                               const OpContext& op, std::uint8_t phase) {
    const int n = size();
    auto& context = mesh_->context();
    const std::size_t elementBytes = reducibleElementBytes(dtype);
    const std::uint64_t tag = slot(op, phase);
    const std::size_t mineBytes = counts[me_] * elementBytes;
    // Every other member's contribution to this member's chunk lands in its own scratch slot.
    if (scratch_.size() < mineBytes * static_cast<std::size_t>(n - 1)) scratch_.resize(mineBytes * (n - 1));
    std::vector<Transfer> receives;
    std::vector<Transfer> sends;
    std::vector<const void*> sources(n);
    for (int step = 1; step < n; ++step) {
        const int m = (me_ + step) % n;
        std::uint8_t* slotData = scratch_.data() + static_cast<std::size_t>(step - 1) * mineBytes;
        sources[m] = slotData;
        if (mineBytes == 0) continue;
        Transfer transfer{context.createUnboundBuffer(slotData, mineBytes), m};
        transfer.buffer->recv(members_[m].rank, tag);
        receives.push_back(std::move(transfer));
    }
    for (int step = 1; step < n; ++step) {
        const int m = (me_ + step) % n;
        const std::size_t chunkBytes = counts[m] * elementBytes;
        if (chunkBytes == 0) continue;
        Transfer transfer{
            context.createUnboundBuffer(const_cast<std::uint8_t*>(input) + displs[m] * elementBytes, chunkBytes), m};
        transfer.buffer->send(members_[m].rank, tag);
        sends.push_back(std::move(transfer));
    }
    for (Transfer& transfer : receives) waitRecv(*transfer.buffer, members_[transfer.member], op);
    sources[me_] = input + displs[me_] * elementBytes;
    reduce(dtype, reduceOp, output, sources.data(), static_cast<std::size_t>(n), counts[me_], n);
    for (Transfer& transfer : sends) waitSend(*transfer.buffer, members_[transfer.member], op);
}

void GlooDomain::allreduce(const std::uint8_t* input, std::uint8_t* output, std::size_t count, tensor::DType dtype,
                           ReduceOp reduceOp, const OpContext& op) {
    const int n = size();
    const std::size_t elementBytes = reducibleElementBytes(dtype);
    std::vector<std::size_t> counts(n), displs(n), offsets(n), bytes(n);
    std::size_t offset = 0;
    for (int m = 0; m < n; ++m) {
        counts[m] = count / n + (static_cast<std::size_t>(m) < count % n ? 1 : 0);
        displs[m] = offset;
        offsets[m] = offset * elementBytes;
        bytes[m] = counts[m] * elementBytes;
        offset += counts[m];
    }
    std::uint8_t* mine = output + offsets[me_];
    reduceScatter(input, mine, counts, displs, dtype, reduceOp, op, 1);
    allgatherv(output, offsets, bytes, mine, op, 2);
}

void GlooDomain::broadcast(std::uint8_t* buffer, std::size_t bytes, int root, const OpContext& op) {
    if (bytes == 0) return;
    auto& context = mesh_->context();
    const std::uint64_t tag = slot(op, 0);
    if (me_ == root) {
        std::vector<Transfer> sends;
        for (int step = 1; step < size(); ++step) {
            const int m = (me_ + step) % size();
            Transfer transfer{context.createUnboundBuffer(buffer, bytes), m};
            transfer.buffer->send(members_[m].rank, tag);
            sends.push_back(std::move(transfer));
        }
        for (Transfer& transfer : sends) waitSend(*transfer.buffer, members_[transfer.member], op);
    } else {
        auto receive = context.createUnboundBuffer(buffer, bytes);
        receive->recv(members_[root].rank, tag);
        waitRecv(*receive, members_[root], op);
    }
}

void GlooDomain::barrier(const OpContext& op) {
    const int n = size();
    auto& context = mesh_->context();
    const std::uint64_t tag = slot(op, 0);
    // One byte to and from every member: all-to-all, so every member has seen everyone arrive.
    std::uint8_t token = 1;
    std::vector<std::uint8_t> tokens(static_cast<std::size_t>(n), 0);
    std::vector<Transfer> receives;
    std::vector<Transfer> sends;
    for (int step = 1; step < n; ++step) {
        const int m = (me_ + step) % n;
        Transfer transfer{context.createUnboundBuffer(&tokens[m], 1), m};
        transfer.buffer->recv(members_[m].rank, tag);
        receives.push_back(std::move(transfer));
    }
    for (int step = 1; step < n; ++step) {
        const int m = (me_ + step) % n;
        Transfer transfer{context.createUnboundBuffer(&token, 1), m};
        transfer.buffer->send(members_[m].rank, tag);
        sends.push_back(std::move(transfer));
    }
    for (Transfer& transfer : receives) waitRecv(*transfer.buffer, members_[transfer.member], op);
    for (Transfer& transfer : sends) waitSend(*transfer.buffer, members_[transfer.member], op);
}

} // namespace mixz::comm

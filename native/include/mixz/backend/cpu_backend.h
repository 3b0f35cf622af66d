// The CPU compute backend: mixz::model's kernels (OpenBLAS GEMMs, our element-wise and attention
// loops over mixz/common/thread_pool.h), buffers from a size-keyed pool in host memory, and one
// communication thread that runs the queued collectives in order.
#pragma once

#include <memory>

#include "mixz/backend/compute_backend.h"

namespace mixz::backend {

// `kernelThreads` < 1 counts as 1. The communication thread starts now and is joined (after
// running everything queued) when the backend is destroyed. `staged`: Device::kCpuStaged (the
// same arithmetic, behind the device contract: hostAddressable() is false), for tests.
std::unique_ptr<ComputeBackend> makeCpuBackend(int kernelThreads, bool staged = false);

} // namespace mixz::backend

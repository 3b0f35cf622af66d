// cudaProbe(): what this machine has for the CUDA backend (driver, devices, cuBLAS, NCCL) and
// whether this build compiled it. Synchronous: the probe only dlopens and asks the driver (no
// context, no kernel), well under a second. The shape is NativeCudaProbe in
// packages/engine/src/binding/AddonCudaTypes.ts.
#pragma once

#include <napi.h>

namespace mixz::addon {

Napi::Value cudaProbe(const Napi::CallbackInfo& info);

} // namespace mixz::addon

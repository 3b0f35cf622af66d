// LoRA on the partitioned parameters (Engine::applyLora): the base is frozen and every target
// linear of every layer gets trainable adapters in a new group of its unit.
#pragma once

#include "mixz/zero/engine.h"
#include "mixz/zero/parameter_store.h"

namespace mixz::zero {

// Throws InvalidArgument for bad options (rank, alpha, dropout, targets), changing nothing.
void validateLoraOptions(const LoraOptions& options);

// Freezes every base parameter (frees its gradient, master and optimizer states: DeepSpeed keeps
// none for frozen parameters) and adds A [r, in] (PEFT's init: uniform ±1/sqrt(in), from
// options.seed) and B [out, r] (zeros) for each target linear. Nothing may be gathered (the
// caller releases first). Marks the persistent unit dirty when adapters land in it.
void addLoraAdapters(ParameterStore& store, const model::LlamaDims& dims, const LoraOptions& options);

} // namespace mixz::zero

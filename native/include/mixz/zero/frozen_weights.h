// qwZ for frozen weights (Engine::quantizeNontrainable): the primary partition of every frozen,
// non-persistent group — and its hpZ secondary, rebuilt from the real gathered values — become
// int8 blocks with float32 scales, quantized once from their real values; gathers then move int8
// and dequantize per parameter into fp32.
#pragma once

#include "mixz/zero/collective_runner.h"
#include "mixz/zero/engine.h"
#include "mixz/zero/fetcher.h"
#include "mixz/zero/parameter_store.h"
#include "mixz/zero/secondaries.h"

namespace mixz::zero {

// A collective (with hpZ: one exact gather per group). Nothing may be gathered (the caller
// releases first).
QuantizeReport quantizeFrozen(ParameterStore& store, Fetcher& fetcher, Secondaries& secondaries, CollectiveRunner& runner);

} // namespace mixz::zero

// mixz's side of the GPU LoRA step benchmark (issue 11, item 6; the peer is torch_lora_step.py
// beside this file, with the same shape and defaults): one rank of mixz::zero::Engine on the CUDA
// backend, bf16 model, LoRA r 16 alpha 32 on all seven linears of every layer, frozen weights as
// int8 blocks (quantizeNontrainable, block 4096: the schema's default), qwZ on, DeepSpeed's ZeRO-3
// defaults for buckets and thresholds. Random weights (the engine's seeded init, std 0.02) and
// random token ids: timing does not depend on the values.
//
// One step = forward (with labels) + backward + step (AdamW on the LoRA partitions; step also zeroes
// the gradients), as ZeroEngine runs them. Each engine call returns when its work is complete (the
// backend synchronizes its stream at the end of each kernel call), so a host clock around the three
// calls times the step. `--warmup` untimed steps, then `--steps` timed ones; the median is reported.
// Then `--memory-steps` more steps with a thread sampling cudaMemGetInfo every millisecond: the peak
// of (device memory in use − in use before the engine existed) is what this process's mixz held on
// the device at most (device-check runs nothing else on the GPU while the baseline is read, at the
// start, and while the peak is sampled, at the end), weights, caches and the caching allocator's reserve included (comparable to
// torch's max_memory_reserved; the CUDA context and cuBLAS's library memory before the engine are
// excluded, cuBLAS's workspace made by the backend is included). The engine's own accounting
// (Engine::memory()) is printed beside it.
//
// Prints one JSON object on the last line: {"peer": "mixz", "step_ms", "step_ms_all",
// "peak_device_bytes", "tokens_per_s", "params", "trainable_params", "init_s", "memory": {…},
// "metrics_ms": {…}, "device", …}.
//
// Build (scripts/device-check does it, with the same objects as backend_device_test):
//   g++ -std=c++17 -O2 -pthread -DMIXZ_WITH_CUDA=1 -Inative/include -I$CUDA_HOME/include
//       scripts/bench/gpu/mixz_lora_step.cc <core objects> <cuda objects>
//       -lgloo -lopenblas -L$CUDA_HOME/lib64 -lcudart_static -ldl -lrt -o mixz-lora-step
//   mixz-lora-step [--device cuda|cpu] [--dtype bf16|fp16|fp32] [--tiny] [--vocab N] [--hidden N]
//                  [--layers N] [--heads N] [--kv-heads N] [--intermediate N] [--batch N] [--seq N]
//                  [--rank N] [--alpha X] [--warmup N] [--steps N] [--memory-steps N] [--threads N]
//                  [--budget-s S]   (stop timing after S seconds of timed steps, but time at least 3)
//                  [--wait-for FILE [--wait-timeout-s S]]   (after initialization, wait for FILE to
//                  exist before the first step: the engine's initialization is host work — a minute
//                  for 1B parameters — so device-check overlaps it with the correctness tests and
//                  lets the timed steps start only once the GPU is otherwise idle)
//   --tiny --device cpu: a smoke run of this program on a machine without a GPU (seconds).
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "mixz/backend/compute_backend.h"
#include "mixz/comm/communicator.h"
#include "mixz/comm/self_test.h"
#include "mixz/tensor/dtype.h"
#include "mixz/zero/engine.h"

namespace {

using Clock = std::chrono::steady_clock;
using mixz::tensor::DType;

struct Args {
    std::string device = "cuda";
    std::string dtype = "bf16";
    int vocab = 32000, hidden = 2048, layers = 20, heads = 32, kvHeads = 8, intermediate = 5632;
    int batch = 4, seq = 512, rank = 16;
    double alpha = 32;
    int warmup = 3, steps = 10, memorySteps = 2, threads = 8;
    double budgetS = 0; // > 0: stop timing once this many seconds of timed steps passed (at least 3 steps)
    std::string waitFor;   // non-empty: after the (host-only) initialization, wait until this file exists
    double waitTimeoutS = 600;
};

[[noreturn]] void usage(const char* what) {
    std::fprintf(stderr, "mixz-lora-step: %s (see the header of scripts/bench/gpu/mixz_lora_step.cc)\n", what);
    std::exit(2);
}

Args parse(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto next = [&]() -> const char* {
            if (i + 1 >= argc) usage(("missing value after " + arg).c_str());
            return argv[++i];
        };
        auto integer = [&]() { return static_cast<int>(std::strtol(next(), nullptr, 10)); };
        if (arg == "--device") a.device = next();
        else if (arg == "--dtype") a.dtype = next();
        else if (arg == "--tiny") {
            a.vocab = 128, a.hidden = 64, a.layers = 2, a.heads = 4, a.kvHeads = 2, a.intermediate = 160;
            a.batch = 2, a.seq = 16, a.rank = 4;
        } else if (arg == "--vocab") a.vocab = integer();
        else if (arg == "--hidden") a.hidden = integer();
        else if (arg == "--layers") a.layers = integer();
        else if (arg == "--heads") a.heads = integer();
        else if (arg == "--kv-heads") a.kvHeads = integer();
        else if (arg == "--intermediate") a.intermediate = integer();
        else if (arg == "--batch") a.batch = integer();
        else if (arg == "--seq") a.seq = integer();
        else if (arg == "--rank") a.rank = integer();
        else if (arg == "--alpha") a.alpha = std::strtod(next(), nullptr);
        else if (arg == "--warmup") a.warmup = integer();
        else if (arg == "--steps") a.steps = integer();
        else if (arg == "--memory-steps") a.memorySteps = integer();
        else if (arg == "--threads") a.threads = integer();
        else if (arg == "--budget-s") a.budgetS = std::strtod(next(), nullptr);
        else if (arg == "--wait-for") a.waitFor = next();
        else if (arg == "--wait-timeout-s") a.waitTimeoutS = std::strtod(next(), nullptr);
        else usage(("unknown argument " + arg).c_str());
    }
    if (a.device != "cuda" && a.device != "cpu") usage("--device must be cuda or cpu");
    if (a.steps < 1) usage("--steps must be at least 1");
    return a;
}

DType dtypeOf(const std::string& name) {
    if (name == "bf16") return DType::kBFloat16;
    if (name == "fp16") return DType::kFloat16;
    if (name == "fp32") return DType::kFloat32;
    usage("--dtype must be bf16, fp16 or fp32");
}

std::size_t deviceUsed() {
    std::size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) != cudaSuccess) return 0;
    return total - free;
}

// Samples device memory in use until stopped; keeps the largest reading.
class MemorySampler {
public:
    MemorySampler() : thread_([this] {
                          while (!stop_.load(std::memory_order_relaxed)) {
                              const std::size_t used = deviceUsed();
                              if (used > peak_.load(std::memory_order_relaxed)) peak_.store(used, std::memory_order_relaxed);
                              std::this_thread::sleep_for(std::chrono::milliseconds(1));
                          }
                      }) {}
    ~MemorySampler() { stop(); }
    std::size_t stop() {
        stop_.store(true);
        if (thread_.joinable()) thread_.join();
        return peak_.load();
    }

private:
    std::atomic<bool> stop_{false};
    std::atomic<std::size_t> peak_{0};
    std::thread thread_;
};

double seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

} // namespace

int main(int argc, char** argv) {
    const Args a = parse(argc, argv);
    const bool cuda = a.device == "cuda";
    std::string deviceName = "cpu";
    std::size_t baseline = 0;
    if (cuda) {
        int count = 0;
        const cudaError_t status = cudaGetDeviceCount(&count);
        if (status != cudaSuccess || count == 0) {
            std::printf("SKIP: no CUDA device (%s)\n", status != cudaSuccess ? cudaGetErrorString(status) : "0 devices visible");
            return 0;
        }
        cudaDeviceProp prop{};
        if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) deviceName = prop.name;
        cudaFree(nullptr); // the context exists before the baseline is read
        baseline = deviceUsed();
    }
    // device-check starts nothing else on the GPU before this line: the baseline is this process's
    // CUDA context (and whatever the card held before), not another program's memory.
    std::fprintf(stderr, "mixz-lora-step: device baseline %zu bytes in use\n", baseline);

    mixz::zero::EngineOptions o;
    o.dims.vocab = a.vocab;
    o.dims.hidden = a.hidden;
    o.dims.layers = a.layers;
    o.dims.heads = a.heads;
    o.dims.kvHeads = a.kvHeads;
    o.dims.intermediate = a.intermediate;
    o.dims.maxSeq = a.seq;
    o.dtype = dtypeOf(a.dtype);
    o.seed = 1;
    o.initStd = 0.02;
    // DeepSpeed's ZeRO-3 defaults (the schema's: configs/ds_config.schema.json).
    o.zero.prefetchBucketSize = 50'000'000;
    o.zero.maxLiveParameters = 1'000'000'000;
    o.zero.persistenceThreshold = 100'000;
    o.zero.reduceBucketSize = 500'000'000;
    o.zero.overlapComm = true;
    o.optimizer.beta1 = 0.9;
    o.optimizer.beta2 = 0.999;
    o.optimizer.eps = 1e-8;
    o.optimizer.weightDecay = 0.0;
    o.optimizer.decoupledWeightDecay = true;
    o.backend.device = cuda ? mixz::backend::Device::kCuda : mixz::backend::Device::kCpu;
    o.backend.deviceOrdinal = 0;
    o.backend.kernelThreads = a.threads;
    o.quantBlockSize = 4096;
    o.quantizeWeights = true;
    o.quantizeGradients = false;
    o.hpzSize = 1;
    o.gradientCommDType = o.dtype;
    o.timeout = std::chrono::milliseconds(600'000);

    std::mt19937 random(7);
    std::uniform_int_distribution<std::int32_t> token(0, a.vocab - 1);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(a.batch) * a.seq);
    for (std::int32_t& id : ids) id = token(random);

    std::string json;
    int rc = 0;
    try {
        mixz::comm::testing::SuiteOptions world;
        world.ranks = 1;
        world.transport = mixz::comm::Transport::kShm;
        world.timeout = o.timeout;
        world.jobId = "lorastep-" + std::to_string(getpid());
        mixz::comm::testing::runWorld(world, [&](mixz::comm::Communicator& comm, int) {
            std::shared_ptr<mixz::comm::Communicator> shared(&comm, [](mixz::comm::Communicator*) {});
            const auto initStart = Clock::now();
            mixz::zero::Engine engine(o, shared);
            const double constructS = seconds(initStart);
            mixz::zero::LoraOptions lora;
            lora.rank = a.rank;
            lora.alpha = a.alpha;
            lora.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
            lora.seed = 3;
            engine.applyLora(lora);
            const mixz::zero::QuantizeReport q = engine.quantizeNontrainable();
            const double initS = seconds(initStart);
            std::size_t params = 0, trainable = 0;
            for (const mixz::zero::ParamInfo& p : engine.params()) {
                params += p.numel;
                if (p.trainable) trainable += p.numel;
            }
            std::fprintf(stderr, "mixz-lora-step: %zu parameters (%zu LoRA), %zu frozen quantized; init %.1f s (construction %.1f s)\n",
                         params, trainable, q.parameters, initS, constructS);

            if (!a.waitFor.empty()) {
                std::fprintf(stderr, "mixz-lora-step: initialized; waiting for %s\n", a.waitFor.c_str());
                const auto waitStart = Clock::now();
                while (access(a.waitFor.c_str(), F_OK) != 0) {
                    if (seconds(waitStart) > a.waitTimeoutS) throw std::runtime_error("timed out waiting for " + a.waitFor);
                    std::this_thread::sleep_for(std::chrono::milliseconds(100));
                }
                std::fprintf(stderr, "mixz-lora-step: starting after %.1f s of waiting\n", seconds(waitStart));
            }
            mixz::zero::Batch batch;
            batch.inputIds = ids.data();
            batch.labels = ids.data();
            batch.micro = a.batch;
            batch.seq = a.seq;
            mixz::zero::StepOptions step;
            step.lr = 1e-4;
            step.lossScale = 1;
            step.gradientClipping = 0;
            auto oneStep = [&]() {
                const double loss = engine.forward(batch, true).loss;
                engine.backward(1.0);
                engine.step(step);
                return loss;
            };
            double loss = 0;
            for (int i = 0; i < a.warmup; ++i) {
                const auto t = Clock::now();
                loss = oneStep();
                std::fprintf(stderr, "mixz-lora-step: warm-up step %d: %.1f ms, loss %.4f\n", i + 1, 1000 * seconds(t), loss);
            }
            engine.takeMetrics();
            std::vector<double> times;
            const auto timedStart = Clock::now();
            for (int i = 0; i < a.steps; ++i) {
                // A slow step (the device check's time is short): fewer steps, never under 3.
                if (a.budgetS > 0 && i >= 3 && seconds(timedStart) > a.budgetS) break;
                const auto t = Clock::now();
                loss = oneStep();
                times.push_back(1000 * seconds(t));
            }
            const mixz::zero::EngineMetrics m = engine.takeMetrics();
            std::size_t peak = 0;
            if (cuda && a.memorySteps > 0) {
                MemorySampler sampler;
                for (int i = 0; i < a.memorySteps; ++i) oneStep();
                peak = sampler.stop();
            }
            const mixz::zero::MemoryReport mem = engine.memory();
            std::vector<double> sorted = times;
            std::sort(sorted.begin(), sorted.end());
            const std::size_t n = sorted.size();
            const double median = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
            const double perStep = 1000.0 / static_cast<double>(times.size()); // metrics: seconds over the timed steps
            char buffer[4096];
            std::string all;
            for (std::size_t i = 0; i < times.size(); ++i) {
                std::snprintf(buffer, sizeof buffer, "%s%.3f", i ? ", " : "", times[i]);
                all += buffer;
            }
            std::snprintf(
                buffer, sizeof buffer,
                "{\"peer\": \"mixz\", \"step_ms\": %.3f, \"step_ms_all\": [%s], \"peak_device_bytes\": %zu, \"tokens_per_s\": %.1f, "
                "\"params\": %zu, \"trainable_params\": %zu, \"final_loss\": %.6f, \"init_s\": %.2f, \"device\": \"%s\", \"dtype\": \"%s\", "
                "\"frozen_weights\": \"int8 blocks of 4096 (quantizeNontrainable)\", "
                "\"memory\": {\"parameterPartitions\": %zu, \"quantizedPartitions\": %zu, \"quantScales\": %zu, \"persistentParameters\": %zu, "
                "\"gatheredParametersPeak\": %zu, \"gradientPartitions\": %zu, \"masterWeights\": %zu, \"optimizerStates\": %zu, "
                "\"activationsPeak\": %zu, \"communicationBuffers\": %zu}, "
                "\"metrics_ms\": {\"compute\": %.2f, \"gatherWait\": %.2f, \"reduceWait\": %.2f, \"gather\": %.2f, \"reduce\": %.2f, "
                "\"optimizer\": %.2f}, "
                "\"shape\": {\"vocab\": %d, \"hidden\": %d, \"layers\": %d, \"heads\": %d, \"kv_heads\": %d, \"intermediate\": %d, "
                "\"batch\": %d, \"seq\": %d, \"lora_rank\": %d, \"lora_alpha\": %g}}",
                median, all.c_str(), peak > baseline ? peak - baseline : 0, a.batch * a.seq * 1000.0 / median, params, trainable, loss,
                initS, deviceName.c_str(), a.dtype.c_str(), mem.parameterPartitions, mem.quantizedPartitions, mem.quantScales,
                mem.persistentParameters, mem.gatheredParametersPeak, mem.gradientPartitions, mem.masterWeights, mem.optimizerStates,
                mem.activationsPeak, mem.communicationBuffers, m.computeSeconds * perStep, m.gatherWaitSeconds * perStep,
                m.reduceWaitSeconds * perStep, m.gatherSeconds * perStep, m.reduceSeconds * perStep, m.optimizerSeconds * perStep,
                a.vocab, a.hidden, a.layers, a.heads, a.kvHeads, a.intermediate, a.batch, a.seq, a.rank, a.alpha);
            json = buffer;
        });
    } catch (const std::exception& error) {
        std::fprintf(stderr, "mixz-lora-step: FAILED: %s\n", error.what());
        rc = 1;
    }
    if (!json.empty()) std::printf("%s\n", json.c_str());
    return rc;
}

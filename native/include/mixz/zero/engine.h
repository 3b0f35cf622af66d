// mixz::zero::Engine: ZeRO stage 3 training of a LLaMA-family model (reference/zeropp.md §2).
// This header is the engine's whole public face (the addon includes nothing else of mixz::zero);
// the implementation is split by concern, each piece in include/mixz/zero/ and src/zero/:
//
//   engine.cc            this facade, part 1: checks the descriptor's decisions, orchestrates
//                        forward, backward, step (through mixz::optim), applyLora, quantization
//   engine_queries.cc    part 2: generate, gatherParameter, slices, memory and metrics reports
//   engine_state.h       (src/zero only) Engine::State, the pieces below wired together
//   partition_layout     Layout/makeLayout: how a group is cut into partitions over M members
//   parameter_store      ParamInfo, units and groups, allocation, initialization, partition ↔
//                        fp32 conversion, int8 blocks, readSlice/writeSlice
//   fetcher              gather + unpack into full fp32 buffers, fetch/prefetch/release, the
//                        persistent unit
//   secondaries          hpZ secondary partitions over the intra-node group
//   gradient_reducer     reduce-scatter in chunks (fp32 or 16-bit wire), qgZ's two levels,
//                        accumulation into the gradient partitions
//   layer_views          the kernels' parameter and gradient views (LoRA scale, dropout seeds)
//   lora_params          applyLora's freezing and adapters
//   frozen_weights       quantizeNontrainable's int8 primaries and secondaries
//   collective_runner    collectives on the backend's ordered queue, with the engine's timeout;
//                        the metrics recorder
//   collective_tags.h    the tag of every collective the engine issues
//   element_ops          dtype conversion, finiteness, poisoned quantized blocks
// Kernels, compute buffers and the communication queue come from a mixz::backend::ComputeBackend
// (mixz/backend/compute_backend.h; today the CPU backend).
//
// Parameters live partitioned: each one is flattened, zero-padded to a multiple of the world size
// N and split so that rank r owns elements [r·p, (r+1)·p), p = padded/N, in the model dtype
// (fp32, fp16 or bf16). Parameters are grouped into units, the granularity of gathers:
//
//   unit 0          persistent: every parameter with numel ≤ stage3_param_persistence_threshold
//                   (the RMSNorm weights of a small model). Gathered at construction, its trainable
//                   parameters again after every optimizer step, anything written again before the
//                   next use; never released, and without hpZ secondaries.
//   unit 1          the token embedding
//   units 2..L+1    decoder layer i's remaining parameters
//   unit L+2        the final norm (unless persistent) and the LM head
//
// A unit holds one or two groups (its base parameters; after LoRA, its adapters). A group's
// partitions are one flat buffer (its parameters' partitions back to back, or int8 codes and scales
// for quantized frozen groups), so one all-gather fetches a whole group and every rank's
// contribution lands contiguously; an unpack pass places each parameter into its full fp32 compute
// buffer (converting from fp16/bf16, or dequantizing per parameter).
//
// Forward fetches unit u just before its compute, releases it after (except the last unit, whose
// backward follows at once), and prefetches the following units on the communication queue while
// the gathered elements stay within min(stage3_prefetch_bucket_size, stage3_max_live_parameters).
// Backward walks the units in reverse, gathers again, computes, and hands the unit's full fp32
// gradients to the communication queue, which reduce-scatters them (mean over ranks, in chunks of
// at most reduce_bucket_size elements) and adds this rank's slice into the gradient partition
// (model dtype, as DeepSpeed's default gradient accumulation dtype). Compute is fp32 whatever the
// model dtype: a CPU has no fast fp16 GEMM, and storage, traffic and gradient partitions keep the
// model dtype so loss scaling and overflow behave as DeepSpeed's.
//
// step() applies AdamW/Adam (mixz/optim/adamw.h) to the fp32 master partitions (for an fp32 model
// the parameter partition is the master) with the global gradient norm for clipping; loss-scale
// policy and learning-rate schedules stay in TypeScript, which passes the outcome in StepOptions.
//
// Options: TypeScript owns every default (the JSON schema, DeepSpeed's values) and always sends a
// complete descriptor; the fields below are value-initialized (0/false) and the descriptor fills
// every one. It also carries the ZeRO++ decisions (hpzSize, quantizeGradients), which the
// constructor checks against the groups it is given instead of deciding anything itself.
//
// Threading: all methods except takeMetrics() and abort() must be called from one thread at a time
// and not while another call runs (the addon serializes them); the engine runs its collectives on
// its backend's communication queue and never touches the communicator from the caller's thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mixz/comm/communicator.h"
#include "mixz/backend/compute_backend.h"
#include "mixz/model/llama.h"
#include "mixz/optim/adamw.h"
#include "mixz/tensor/dtype.h"

namespace mixz::zero {

// Every field is filled from the descriptor (no defaults here: see the comment at the top).
struct ZeroOptions {
    std::size_t prefetchBucketSize = 0; // elements; 0 disables prefetch
    std::size_t maxLiveParameters = 0;
    std::size_t persistenceThreshold = 0;
    std::size_t reduceBucketSize = 0;
    bool overlapComm = false;
};

// beta1, beta2, eps, weightDecay, decoupledWeightDecay (true: AdamW; false: Adam with L2).
using OptimizerOptions = optim::AdamOptions;

struct EngineOptions {
    model::LlamaDims dims;
    tensor::DType dtype = tensor::DType::kFloat32;
    std::uint64_t seed = 0;
    double initStd = 0;
    ZeroOptions zero;
    OptimizerOptions optimizer;
    // false: an inference engine (DeepSpeed's optimizer-less engine: reference and reward models).
    // Every parameter is frozen — no gradient, master or moment is allocated — and backward() and
    // step() are refused; `optimizer` is not read.
    bool hasOptimizer = true;
    // The compute backend: device (cpu, or cuda with the rank's device ordinal) and CPU kernel
    // threads. Its dtype is not read: the engine passes `dtype` on (one owner).
    backend::BackendOptions backend;
    // Elements per qwZ block (mixz.quant_block_size); partitions smaller than a block are one block.
    // Must be a power of two in [8, 65536] (0, unset, is refused).
    std::size_t quantBlockSize = 0;
    // zero_quantized_weights (qwZ on the fly): world gathers of parameters without int8 partitions
    // move int8 blocks quantized just before the gather. hpZ secondaries stay in the model dtype,
    // so the intra-node backward gathers never quantize a second time (pitfall P7).
    bool quantizeWeights = false;
    // qgZ is active (TypeScript decided: zero_quantized_gradients on more than one uniform node):
    // gradients are reduced in two levels, fp32 reduce-scatter inside the node, then int4 blocks
    // between nodes, and every rank gets the true mean over all ranks (zeropp.md §1.8: DeepSpeed's
    // returns ranks-per-node × the mean). True exactly when a `cross` group is given (more than one
    // member, ranks per node × nodes = world); otherwise the plain reduce-scatter runs.
    bool quantizeGradients = false;
    // hpZ secondary partitions over groups of this many ranks (zero_hpz_partition_size as
    // TypeScript resolved it): 1 = no hpZ; > 1 exactly when an `hpz` group of that size is given
    // (1 < hpzSize < world). 0 (unset) is refused.
    int hpzSize = 0;
    // The dtype gradients travel in for the reduce-scatter (communication_data_type; DeepSpeed's
    // default is the model dtype). Members sum in fp32 and round once (mixz/comm/reduce.h).
    tensor::DType gradientCommDType = tensor::DType::kFloat32;
    // Of every collective; must be positive. The tags are fixed (mixz/zero/collective_tags.h).
    std::chrono::milliseconds timeout{0};
};

struct ParamInfo {
    std::string name;
    std::vector<std::int64_t> shape;
    std::size_t numel = 0;
    std::size_t partition = 0; // elements per rank (padded / N)
    int unit = 0;
    bool trainable = true;
    bool persistent = false;
    bool quantized = false; // frozen and stored as int8 blocks (quantizeNontrainable)
    bool hasSecondary = false; // an hpZ secondary partition is held now
};

struct LoraOptions {
    int rank = 8;
    double alpha = 16;
    // Linear names of a decoder layer: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
    std::vector<std::string> targets;
    std::uint64_t seed = 0;
    // PEFT's lora_dropout, in [0, 1): inverted dropout of each adapter's input in training
    // forwards only (evaluation and generation use none). Each training forward draws fresh masks
    // from (seed, this rank, the count of training forwards so far, layer, linear): ranks draw
    // independent masks, as PEFT's do on different data, and a run repeats exactly with the same
    // seed and world. Checkpoints record the count (trainingForwards), so a resumed run draws the
    // masks an uninterrupted one would.
    double dropout = 0;
};

struct GenerateOptions {
    int batch = 1;
    int promptLength = 1;
    int maxNewTokens = 1;
    double temperature = 1.0; // ≤ 0: greedy
    int topK = 0;             // 0: no limit
    double topP = 1.0;        // nucleus sampling, in (0, 1]; 1: no limit
    std::uint64_t seed = 0;
    // A sequence that produced one of these (EOS and the generation config's stop ids) is done:
    // its later positions hold padId. Generation ends early when every sequence is done.
    std::vector<std::int32_t> stopIds;
    std::int32_t padId = 0;
};

struct QuantizeReport {
    std::size_t parameters = 0;  // frozen parameters now stored as int8
    std::size_t bytesBefore = 0; // their primary and secondary partitions before
    std::size_t bytesAfter = 0;  // after (codes and scales)
};

struct Batch {
    const std::int32_t* inputIds = nullptr;
    const std::int32_t* labels = nullptr; // null: evaluation without a loss
    int micro = 0;
    int seq = 0;
    // Packed rows: each token's position in its own example (0 starts one; model::validatePositions
    // says exactly what is accepted). Null: one sequence per row.
    const std::int32_t* positions = nullptr;
};

struct ForwardResult {
    double loss = 0;
    std::size_t counted = 0;
};

struct StepOptions {
    double lr = 0;
    // The gradients hold loss·scale/accumulation; step divides by scale (and clips).
    double lossScale = 1;
    double gradientClipping = 0; // 0: off
    bool checkOverflow = false;  // fp16: an inf/NaN anywhere skips the step
};

struct StepResult {
    bool overflow = false; // step skipped
    double gradNorm = 0;   // of the unscaled gradients; -1 when not finite
};

// Bytes resident on this rank by category (memoryReport()).
struct MemoryReport {
    std::size_t parameterPartitions = 0;   // primary partitions in the model dtype
    std::size_t quantizedPartitions = 0;   // primary partitions of int8 frozen parameters (codes)
    std::size_t secondaryPartitions = 0;   // hpZ secondary partitions (model dtype or int8 codes)
    std::size_t quantScales = 0;           // float32 scales of every int8 partition
    std::size_t persistentParameters = 0; // unit 0 gathered, kept for the whole run
    std::size_t gatheredParameters = 0;   // full fp32 buffers held now (cached for reuse)
    std::size_t gatheredParametersPeak = 0;
    std::size_t gradientPartitions = 0;
    std::size_t masterWeights = 0;
    std::size_t optimizerStates = 0;
    std::size_t activations = 0;
    std::size_t activationsPeak = 0;
    std::size_t communicationBuffers = 0;
};

// Seconds spent since the previous call to takeMetrics().
struct EngineMetrics {
    double computeSeconds = 0;      // forward/backward kernels on the caller's thread
    double gatherWaitSeconds = 0;   // the caller blocked on gathers not finished yet
    double reduceWaitSeconds = 0;   // the caller blocked on reduce-scatters at the end of backward
    double gatherSeconds = 0;       // the communication thread gathering (and unpacking)
    double reduceSeconds = 0;       // the communication thread reduce-scattering
    double optimizerSeconds = 0;
    std::uint64_t gatheredBytes = 0;  // received by all-gathers
    std::uint64_t reducedBytes = 0;   // sent into reduce-scatters
    // Bytes this rank received, by what and from where: "intra" from ranks on its own plan host,
    // "cross" from other hosts. Gathers count the partitions received; reduce-scatters the other
    // members' contributions to this rank's chunk (the logical volume, whatever the algorithm).
    std::uint64_t frozenGatherIntraBytes = 0;
    std::uint64_t frozenGatherCrossBytes = 0;
    std::uint64_t trainableGatherIntraBytes = 0;
    std::uint64_t trainableGatherCrossBytes = 0;
    std::uint64_t reduceIntraBytes = 0;
    std::uint64_t reduceCrossBytes = 0;
};

class Engine {
public:
    // Builds the parameter partitions (initialized from `seed`: normal(0, initStd) for matrices,
    // ones for norms, each element drawn from a counter-based generator so that every world size
    // produces the same model) and gathers the persistent unit. `world` must be connected and
    // must not be used by anyone else while the engine lives. `hpz`, given exactly when
    // options.hpzSize > 1 (a group of hpzSize ranks on this node, 1 < hpzSize < world), holds
    // secondary partitions: backward gathers, generation and every gather of frozen weights read
    // them over the intra-node group. `node` and `cross`, given exactly when
    // options.quantizeGradients, carry qgZ's two levels. A mismatch is an InvariantError.
    struct Groups {
        std::shared_ptr<comm::Communicator> hpz;   // hpZ secondaries (options.hpzSize members), or null
        std::shared_ptr<comm::Communicator> node;  // every rank of this node (qgZ), or null
        std::shared_ptr<comm::Communicator> cross; // this local rank on every node (qgZ), or null
    };
    Engine(const EngineOptions& options, std::shared_ptr<comm::Communicator> world, Groups groups = {});
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    const std::vector<ParamInfo>& params() const;
    int rank() const;
    int worldSize() const;

    // Forward of a micro-batch. With labels and `train`, keeps activations for backward().
    ForwardResult forward(const Batch& batch, bool train);
    // Backward of the last training forward; `lossGrad` = loss scale / accumulation steps.
    // Accumulates into the gradient partitions.
    void backward(double lossGrad);
    StepResult step(const StepOptions& options);
    void zeroGradients();

    // LoRA (after construction, before training): every base parameter becomes frozen (its
    // gradient, master and optimizer states are freed) and each target linear of every layer gets
    // trainable A [r, in] (PEFT's init: uniform ±1/sqrt(in), from `seed`) and B [out, r] (zeros), so
    // outputs are unchanged until B moves. Not a collective.
    void applyLora(const LoraOptions& options);
    // qwZ for frozen weights (a collective): the primary partition of every frozen, non-persistent
    // parameter — and its hpZ secondary, built now from the gathered real data — become int8
    // blocks with float32 scales, quantized from their real values once; gathers then move int8
    // and dequantize per parameter into fp32.
    QuantizeReport quantizeNontrainable();
    // Sampled continuation of `prompt` ([batch, promptLength] ids) with a KV cache, gathering each
    // layer per token (through hpZ where secondaries exist). A collective: every rank calls it with
    // the same shapes. Returns [batch, maxNewTokens] ids.
    std::vector<std::int32_t> generate(const std::int32_t* prompt, const GenerateOptions& options);
    // Param `index` in full, as compute sees it (gathered the way forward gathers it, dequantized).
    // A collective of the world (or of the hpZ group when it reads secondaries): every rank calls
    // it with the same index.
    std::vector<float> gatherParameter(std::size_t index);

    // This rank's slice of a parameter's flattened data (its partition without padding), as
    // float32. `kind`: "param", "master" (the fp32 copy the optimizer updates), "exp_avg",
    // "exp_avg_sq", "grad". begin() is the slice's first element in the full tensor.
    std::size_t sliceBegin(std::size_t param) const;
    std::size_t sliceLength(std::size_t param) const;
    void readSlice(std::size_t param, const std::string& kind, float* out) const;
    // Writes a slice (all of it) and keeps derived copies consistent: writing "param" also sets
    // the master copy; the persistent unit is gathered again before the next forward.
    void writeSlice(std::size_t param, const std::string& kind, const float* data);
    std::uint64_t optimizerSteps() const;
    void setOptimizerSteps(std::uint64_t steps);
    // Training forwards so far (part of the LoRA dropout masks' seeds), for checkpoints.
    std::uint64_t trainingForwards() const;
    void setTrainingForwards(std::uint64_t forwards);

    MemoryReport memory() const;
    EngineMetrics takeMetrics();

    // Fails the communication thread's collectives at once (abort of the job).
    void abort(const std::string& reason);

    struct State;

private:
    std::unique_ptr<State> state_;
};

} // namespace mixz::zero

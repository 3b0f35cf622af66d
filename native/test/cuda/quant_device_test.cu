// The device kernels of src/cuda/quant and src/cuda/optim against the CPU engine, on a real GPU
// (issue 11). Not part of CI's cppTests (which compiles native/test/*_test.cc only): it needs a
// GPU. scripts/device-check builds and runs it on the lent GPU machine; without a visible device
// it prints "SKIP: no CUDA device (…)" and exits 0.
//
// Each check prints one PASS/FAIL line; the exit status is 0 only when every check passes. Inputs
// are fresh random data per run (the seed is printed; --seed N repeats one), every device output
// is poisoned (all bytes 0xFF: NaN in fp32/fp16/bf16) before each launch, so an element a kernel
// does not write fails.
//   quantize     codes and scales equal quant::quantize's byte for byte (fp32/fp16/bf16 input,
//                int8/int4, block sizes 8 … 65536, odd counts, padding); a NaN or inf in one block
//                is reported as that block.
//   dequantize   equals quant::dequantize bit for bit (every code byte, finite scales including
//                ±0, subnormals, overflowing products; the vector path, its tail, unaligned buffers).
//   convert      equals tensor::convert bit for bit for all nine type pairs (NaN payloads too).
//   adam         equals optim::adamUpdate at 0 ulp (AdamW and Adam, aligned and unaligned):
//                both run mixz/optim/adam_element.h, whose device side uses explicit _rn
//                intrinsics, so nvcc's FMA contraction cannot change a result.
//   sumsq        within 1e-12 relative of optim::sumOfSquares, the same bits on a second run
//                (deterministic), non-finite when an input is inf or NaN.
//   throughput   dequantize of 256 MiB of int8 codes to bf16 and to fp32 against a device-to-device
//                cudaMemcpyAsync of the same output bytes: CUDA events, 3 warm-up runs, median of
//                20; bandwidth counts bytes read plus bytes written; the check wants ≥ 70 % of the
//                copy's bandwidth.
//
// Build and run from the repository root (one command line):
//   nvcc -std=c++17 -O2 -Xcompiler -pthread -gencode arch=compute_80,code=sm_80
//       -gencode arch=compute_90,code=sm_90 -Inative/include -Inative/src -o /tmp/mixz-quant-device-test
//       native/test/cuda/quant_device_test.cu native/src/cuda/quant/*.cu native/src/cuda/optim/*.cu
//       native/src/cuda/device_context.cu native/src/quant/*.cc native/src/tensor/*.cc
//       native/src/optim/adamw.cc native/src/common/error.cc native/src/common/thread_pool.cc
//   /tmp/mixz-quant-device-test [--seed N]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_context.h"
#include "cuda/optim/optim_kernels.h"
#include "cuda/quant/quant_kernels.h"
#include "mixz/optim/adamw.h"
#include "mixz/quant/block_quant.h"
#include "mixz/tensor/dtype.h"

using mixz::tensor::DType;
namespace quant = mixz::quant;
namespace tensor = mixz::tensor;
namespace optim = mixz::optim;

namespace {

int failed = 0;
std::mt19937_64 rng;

#define CUDA_OK(expr)                                                                                 \
    do {                                                                                              \
        const cudaError_t status_ = (expr);                                                           \
        if (status_ != cudaSuccess) {                                                                 \
            std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(status_)); \
            std::exit(1);                                                                             \
        }                                                                                             \
    } while (false)

void report(bool ok, const std::string& name, const std::string& detail) {
    std::printf("%s %s: %s\n", ok ? "PASS" : "FAIL", name.c_str(), detail.c_str());
    std::fflush(stdout);
    if (!ok) ++failed;
}

// Device memory with a byte size, freed at scope exit.
class Device {
public:
    explicit Device(std::size_t bytes) : bytes_(bytes) { CUDA_OK(cudaMalloc(&ptr_, std::max<std::size_t>(bytes, 1) + 64)); }
    ~Device() { cudaFree(ptr_); }
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;
    template <typename T = void>
    T* at(std::size_t byteOffset = 0) const {
        return reinterpret_cast<T*>(static_cast<unsigned char*>(ptr_) + byteOffset);
    }
    void poison() const { CUDA_OK(cudaMemset(ptr_, 0xFF, bytes_ + 64)); }

private:
    void* ptr_ = nullptr;
    std::size_t bytes_;
};

void upload(void* device, const void* host, std::size_t bytes) {
    CUDA_OK(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice));
}
std::vector<unsigned char> download(const void* device, std::size_t bytes) {
    std::vector<unsigned char> host(bytes);
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(host.data(), device, bytes, cudaMemcpyDeviceToHost));
    return host;
}

std::size_t sizeOf(DType type) { return type == DType::kFloat32 ? 4 : 2; }

// n values of `type` (raw bytes) from float32 values: normal data with scattered large values and
// all-zero stretches, like weights after training.
std::vector<unsigned char> randomValues(DType type, std::size_t n) {
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint64_t r = rng();
        v[i] = r % 1000 == 0 ? normal(rng) * 3000.0f : (r % 1000 < 20 ? 0.0f : normal(rng));
    }
    std::vector<unsigned char> bytes(n * sizeOf(type));
    tensor::ConvertOptions options;
    options.input = v.data();
    options.output = bytes.data();
    options.outputType = type;
    options.elements = n;
    tensor::convert(options);
    return bytes;
}

std::vector<unsigned char> randomBytes(std::size_t n) {
    std::vector<unsigned char> bytes(n);
    for (auto& b : bytes) b = static_cast<unsigned char>(rng());
    return bytes;
}

void checkQuantize() {
    for (const DType type : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        for (const int bits : {8, 4}) {
            int cases = 0, bad = 0;
            for (const std::size_t blockSize : {std::size_t{8}, std::size_t{64}, std::size_t{4096}, std::size_t{65536}}) {
                for (const std::size_t n : {std::size_t{1}, std::size_t{13}, blockSize * 37 + 13, std::size_t{(1u << 22) + 3}}) {
                    for (const bool pad : {false, true}) {
                        const std::size_t padded = pad ? quant::paddedSize(n, blockSize) + n % 2 : n;
                        const auto input = randomValues(type, n);
                        const std::size_t codeBytes = quant::quantizedBytes(padded, bits);
                        const std::size_t blocks = quant::blockCount(padded, blockSize);
                        std::vector<unsigned char> cpuCodes(codeBytes);
                        std::vector<float> cpuScales(blocks);
                        quant::QuantizeOptions o;
                        o.input = input.data();
                        o.inputType = type;
                        o.elements = n;
                        o.paddedElements = padded;
                        o.bits = bits;
                        o.blockSize = blockSize;
                        o.output = cpuCodes.data();
                        o.outputBytes = codeBytes;
                        o.scales = cpuScales.data();
                        o.scaleCount = blocks;
                        quant::quantize(o);

                        Device in(input.size()), codes(codeBytes), scales(blocks * 4), firstBad(8);
                        upload(in.at(), input.data(), input.size());
                        codes.poison();
                        scales.poison();
                        mixz::cuda::launchBlockQuantize(in.at(), type, n, padded, bits, blockSize, codes.at<std::uint8_t>(),
                                                        scales.at<float>(), firstBad.at<unsigned long long>(), nullptr);
                        const auto gotCodes = download(codes.at(), codeBytes);
                        const auto gotScales = download(scales.at(), blocks * 4);
                        const auto gotBad = download(firstBad.at(), 8);
                        unsigned long long badBlock;
                        std::memcpy(&badBlock, gotBad.data(), 8);
                        const bool same = gotCodes == cpuCodes &&
                                          std::memcmp(gotScales.data(), cpuScales.data(), blocks * 4) == 0 &&
                                          badBlock == mixz::cuda::kNoBadBlock;
                        ++cases;
                        if (!same && bad++ == 0) {
                            std::fprintf(stderr, "  quantize %s int%d block %zu n %zu padded %zu differs\n",
                                         tensor::dtypeName(type), bits, blockSize, n, padded);
                        }
                    }
                }
            }
            report(bad == 0, std::string("quantize ") + tensor::dtypeName(type) + " int" + std::to_string(bits),
                   std::to_string(cases - bad) + "/" + std::to_string(cases) + " cases equal the CPU's codes and scales");
        }
    }
    // A non-finite value in block 5: reported as block 5.
    for (const DType type : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        const std::size_t n = 64 * 10, blockSize = 64;
        auto input = randomValues(type, n);
        const std::size_t where = 5 * 64 + 17;
        if (type == DType::kFloat32) {
            const float nan = std::numeric_limits<float>::quiet_NaN();
            std::memcpy(input.data() + where * 4, &nan, 4);
        } else {
            const std::uint16_t inf = type == DType::kFloat16 ? 0xFC00u : 0x7F80u;
            std::memcpy(input.data() + where * 2, &inf, 2);
        }
        Device in(input.size()), codes(n), scales(10 * 4), firstBad(8);
        upload(in.at(), input.data(), input.size());
        mixz::cuda::launchBlockQuantize(in.at(), type, n, n, 8, blockSize, codes.at<std::uint8_t>(), scales.at<float>(),
                                        firstBad.at<unsigned long long>(), nullptr);
        unsigned long long badBlock;
        std::memcpy(&badBlock, download(firstBad.at(), 8).data(), 8);
        report(badBlock == 5, std::string("quantize ") + tensor::dtypeName(type) + " non-finite",
               "first bad block " + std::to_string(badBlock) + " (want 5)");
    }
}

void checkDequantize() {
    // Edge scales, all finite as quantize makes them: zero, signed zero, subnormal, products that
    // overflow to ±inf. (An inf or NaN scale is outside the format and gives NaN products whose
    // payload is the hardware's: x86 keeps the operand's, the GPU returns its canonical NaN.)
    const float special[] = {0.0f, -0.0f, 1e-45f, 3e36f, -3e38f, 1e-40f, 7e37f, 1e-3f};
    for (const DType outType : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        for (const int bits : {8, 4}) {
            int cases = 0, bad = 0;
            for (const std::size_t blockSize : {std::size_t{8}, std::size_t{16}, std::size_t{4096}}) {
                for (const std::size_t n : {std::size_t{1}, std::size_t{15}, std::size_t{17}, std::size_t{(1u << 22) + 7}}) {
                    // offset 0: the vector path; offset 2 elements: unaligned buffers, the element path.
                    for (const std::size_t offset : {std::size_t{0}, std::size_t{2}}) {
                        const std::size_t blocks = quant::blockCount(n, blockSize);
                        std::vector<float> scaleValues(blocks);
                        std::normal_distribution<float> normal(0.0f, 1e-3f);
                        for (std::size_t b = 0; b < blocks; ++b) {
                            scaleValues[b] = b % 17 == 3 ? special[rng() % 8] : std::fabs(normal(rng));
                        }
                        const auto codeBytes = randomBytes(quant::quantizedBytes(n, bits));
                        const std::size_t outBytes = n * sizeOf(outType);
                        std::vector<unsigned char> cpu(outBytes);
                        quant::DequantizeOptions o;
                        o.input = codeBytes.data();
                        o.inputBytes = codeBytes.size();
                        o.bits = bits;
                        o.scales = scaleValues.data();
                        o.scaleCount = blocks;
                        o.elements = n;
                        o.blockSize = blockSize;
                        o.output = cpu.data();
                        o.outputType = outType;
                        o.outputElements = n;
                        quant::dequantize(o);

                        const std::size_t codeOffset = bits == 8 ? offset : offset / 2;
                        const std::size_t outOffset = offset * sizeOf(outType);
                        Device codes(codeBytes.size() + codeOffset), scales(blocks * 4), out(outBytes + outOffset);
                        upload(codes.at(codeOffset), codeBytes.data(), codeBytes.size());
                        upload(scales.at(), scaleValues.data(), blocks * 4);
                        out.poison();
                        mixz::cuda::launchBlockDequantize(codes.at<std::uint8_t>(codeOffset), bits, scales.at<float>(), n,
                                                          blockSize, out.at(outOffset), outType, nullptr);
                        ++cases;
                        if (download(out.at(outOffset), outBytes) != cpu && bad++ == 0) {
                            std::fprintf(stderr, "  dequantize int%d → %s block %zu n %zu offset %zu differs\n", bits,
                                         tensor::dtypeName(outType), blockSize, n, offset);
                        }
                    }
                }
            }
            report(bad == 0, std::string("dequantize int") + std::to_string(bits) + " -> " + tensor::dtypeName(outType),
                   std::to_string(cases - bad) + "/" + std::to_string(cases) + " cases bit for bit");
        }
    }
}

void checkConvert() {
    for (const DType from : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        for (const DType to : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
            int cases = 0, bad = 0;
            for (const std::size_t n : {std::size_t{1}, std::size_t{9}, std::size_t{65536}, std::size_t{(1u << 24) + 5}}) {
                for (const std::size_t offset : {std::size_t{0}, std::size_t{1}}) {
                    // Random bit patterns (NaNs with payloads, subnormals, infinities all occur);
                    // 65536 16-bit values are every pattern once.
                    auto input = randomBytes(n * sizeOf(from));
                    if (n == 65536 && from != DType::kFloat32) {
                        for (std::size_t i = 0; i < n; ++i) {
                            const auto h = static_cast<std::uint16_t>(i);
                            std::memcpy(input.data() + 2 * i, &h, 2);
                        }
                    }
                    std::vector<unsigned char> cpu(n * sizeOf(to));
                    tensor::ConvertOptions o;
                    o.input = input.data();
                    o.inputType = from;
                    o.output = cpu.data();
                    o.outputType = to;
                    o.elements = n;
                    tensor::convert(o);
                    Device in(input.size() + offset * sizeOf(from)), out(cpu.size() + offset * sizeOf(to));
                    upload(in.at(offset * sizeOf(from)), input.data(), input.size());
                    out.poison();
                    mixz::cuda::launchConvert(in.at(offset * sizeOf(from)), from, out.at(offset * sizeOf(to)), to, n,
                                              nullptr);
                    ++cases;
                    bad += download(out.at(offset * sizeOf(to)), cpu.size()) != cpu;
                }
            }
            report(bad == 0, std::string("convert ") + tensor::dtypeName(from) + " -> " + tensor::dtypeName(to),
                   std::to_string(cases - bad) + "/" + std::to_string(cases) + " cases bit for bit");
        }
    }
}

bool sameOrBothNaN(float a, float b) {
    return std::memcmp(&a, &b, 4) == 0 || (std::isnan(a) && std::isnan(b));
}

void checkAdam() {
    for (const bool decoupled : {true, false}) {
        for (const std::size_t offset : {std::size_t{0}, std::size_t{1}}) {
            const std::size_t n = (1u << 22) + 3;
            optim::AdamOptions o;
            o.beta1 = 0.9;
            o.beta2 = 0.999;
            o.eps = 1e-8;
            o.weightDecay = 0.01;
            o.decoupledWeightDecay = decoupled;
            std::normal_distribution<float> normal(0.0f, 1.0f);
            std::vector<float> p(n), m(n), v(n), g(n);
            for (std::size_t i = 0; i < n; ++i) {
                p[i] = normal(rng) * 0.02f;
                m[i] = normal(rng) * 1e-3f;
                v[i] = std::fabs(normal(rng)) * 1e-6f;
                g[i] = normal(rng) * 1024.0f * 0.01f;
            }
            Device dp(4 * (n + offset)), dm(4 * (n + offset)), dv(4 * (n + offset)), dg(4 * (n + offset));
            upload(dp.at(4 * offset), p.data(), 4 * n);
            upload(dm.at(4 * offset), m.data(), 4 * n);
            upload(dv.at(4 * offset), v.data(), 4 * n);
            std::size_t differ = 0;
            for (std::uint64_t step = 1; step <= 3; ++step) {
                for (float& x : g) x = normal(rng) * 1024.0f * 0.01f;
                upload(dg.at(4 * offset), g.data(), 4 * n);
                const auto c = optim::adamCoefficients(o, 1e-3 * static_cast<double>(step), step, 1024.0 * (step == 2 ? 1.7 : 1.0));
                optim::adamUpdate(c, g.data(), p.data(), m.data(), v.data(), n);
                mixz::cuda::launchAdamUpdate(c, dg.at<float>(4 * offset), dp.at<float>(4 * offset), dm.at<float>(4 * offset),
                                             dv.at<float>(4 * offset), n, nullptr);
            }
            const auto gp = download(dp.at(4 * offset), 4 * n), gm = download(dm.at(4 * offset), 4 * n),
                       gv = download(dv.at(4 * offset), 4 * n);
            for (std::size_t i = 0; i < n; ++i) {
                float a, b, c;
                std::memcpy(&a, gp.data() + 4 * i, 4);
                std::memcpy(&b, gm.data() + 4 * i, 4);
                std::memcpy(&c, gv.data() + 4 * i, 4);
                differ += !(sameOrBothNaN(a, p[i]) && sameOrBothNaN(b, m[i]) && sameOrBothNaN(c, v[i]));
            }
            report(differ == 0, std::string("adam ") + (decoupled ? "AdamW" : "Adam+L2") + (offset ? " unaligned" : " aligned"),
                   std::to_string(differ) + " of " + std::to_string(n) + " elements differ from the CPU (0 ulp wanted), 3 steps");
        }
    }
}

void checkSumOfSquares() {
    Device partials(mixz::cuda::kSumOfSquaresPartials * 8), result(8);
    for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{5}, std::size_t{(1u << 20) + 7},
                                std::size_t{1u << 26}}) {
        std::vector<float> x(n);
        std::normal_distribution<float> normal(0.0f, 3.0f);
        for (float& value : x) value = normal(rng);
        const double cpu = optim::sumOfSquares(x.data(), n);
        Device values(4 * n + 4);
        upload(values.at(4), x.data(), 4 * n); // offset 4 bytes: the unaligned path too, below
        double got[2];
        for (int run = 0; run < 2; ++run) {
            result.poison();
            mixz::cuda::launchSumOfSquares(values.at<float>(4), n, partials.at<double>(), result.at<double>(), nullptr);
            std::memcpy(&got[run], download(result.at(), 8).data(), 8);
        }
        upload(values.at(), x.data(), 4 * n);
        result.poison();
        mixz::cuda::launchSumOfSquares(values.at<float>(), n, partials.at<double>(), result.at<double>(), nullptr);
        double aligned;
        std::memcpy(&aligned, download(result.at(), 8).data(), 8);
        const double rel = cpu == 0 ? std::fabs(got[0]) : std::fabs(got[0] - cpu) / cpu;
        const bool ok = rel <= 1e-12 && std::memcmp(&got[0], &got[1], 8) == 0 && std::memcmp(&got[0], &aligned, 8) == 0;
        char detail[200];
        std::snprintf(detail, sizeof detail, "n %zu: device %.17g cpu %.17g, relative %.2e, rerun and aligned %s", n, got[0],
                      cpu, rel, ok ? "identical" : "checked");
        report(ok, "sumsq n=" + std::to_string(n), detail);
    }
    for (const float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
        const std::size_t n = 100003;
        std::vector<float> x(n, 0.5f);
        x[77777] = bad;
        Device values(4 * n);
        upload(values.at(), x.data(), 4 * n);
        mixz::cuda::launchSumOfSquares(values.at<float>(), n, partials.at<double>(), result.at<double>(), nullptr);
        double got;
        std::memcpy(&got, download(result.at(), 8).data(), 8);
        report(!std::isfinite(got) && (std::isnan(bad) == std::isnan(got)),
               std::string("sumsq overflow check (") + (std::isnan(bad) ? "NaN" : "inf") + ")",
               "result " + std::to_string(got) + ", gradientScaling finite = " +
                   (optim::gradientScaling(static_cast<float>(got), 1.0, 0.0).finite ? "true" : "false"));
    }
}

float medianMs(std::vector<float> times) {
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

template <typename Launch>
float timeMs(Launch launch) {
    cudaEvent_t start, stop;
    CUDA_OK(cudaEventCreate(&start));
    CUDA_OK(cudaEventCreate(&stop));
    for (int i = 0; i < 3; ++i) launch();
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<float> times;
    for (int i = 0; i < 20; ++i) {
        CUDA_OK(cudaEventRecord(start));
        launch();
        CUDA_OK(cudaEventRecord(stop));
        CUDA_OK(cudaEventSynchronize(stop));
        float ms = 0;
        CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
        times.push_back(ms);
    }
    CUDA_OK(cudaGetLastError());
    CUDA_OK(cudaEventDestroy(start));
    CUDA_OK(cudaEventDestroy(stop));
    return medianMs(times);
}

void checkThroughput() {
    const std::size_t n = std::size_t{256} << 20; // 256 MiB of int8 codes
    const std::size_t blockSize = 4096;
    const std::size_t blocks = quant::blockCount(n, blockSize);
    Device codes(n), scales(blocks * 4), out(n * 4), source(n * 4);
    upload(codes.at(), randomBytes(n).data(), n);
    std::vector<float> s(blocks);
    for (float& x : s) x = 1e-3f * static_cast<float>(1 + rng() % 100);
    upload(scales.at(), s.data(), blocks * 4);
    CUDA_OK(cudaMemset(source.at(), 0x3C, n * 4)); // copy source: not zeros, not the poison
    for (const DType type : {DType::kBFloat16, DType::kFloat32}) {
        const std::size_t outBytes = n * sizeOf(type);
        out.poison();
        const float deqMs = timeMs([&] {
            mixz::cuda::launchBlockDequantize(codes.at<std::uint8_t>(), 8, scales.at<float>(), n, blockSize, out.at(), type, nullptr);
        });
        const float copyMs = timeMs([&] { CUDA_OK(cudaMemcpyAsync(out.at(), source.at(), outBytes, cudaMemcpyDeviceToDevice)); });
        const double deqBytes = static_cast<double>(n + blocks * 4 + outBytes);
        const double copyBytes = 2.0 * static_cast<double>(outBytes);
        const double deqGBs = deqBytes / (deqMs * 1e-3) / 1e9;
        const double copyGBs = copyBytes / (copyMs * 1e-3) / 1e9;
        const double ratio = deqGBs / copyGBs;
        char detail[240];
        std::snprintf(detail, sizeof detail,
                      "dequantize %.3f ms = %.0f GB/s (read+write), D2D copy of the %zu MiB output %.3f ms = %.0f GB/s; "
                      "ratio %.2f (want >= 0.70)",
                      deqMs, deqGBs, outBytes >> 20, copyMs, copyGBs, ratio);
        report(ratio >= 0.70, std::string("throughput int8 -> ") + tensor::dtypeName(type), detail);
    }
}

} // namespace

int main(int argc, char** argv) {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess || count == 0) {
        std::printf("SKIP: no CUDA device (%s)\n", status != cudaSuccess ? cudaGetErrorString(status) : "none visible");
        return 0;
    }
    std::uint64_t seed = std::random_device{}();
    for (int i = 1; i + 1 < argc; ++i) {
        if (std::strcmp(argv[i], "--seed") == 0) seed = std::strtoull(argv[i + 1], nullptr, 10);
    }
    rng.seed(seed);
    cudaDeviceProp prop{};
    CUDA_OK(cudaGetDeviceProperties(&prop, 0));
    std::printf("quant_device_test: %s (%d SMs), seed %llu\n", prop.name, prop.multiProcessorCount,
                static_cast<unsigned long long>(seed));
    try {
        checkQuantize();
        checkDequantize();
        checkConvert();
        checkAdam();
        checkSumOfSquares();
        checkThroughput();
    } catch (const std::exception& error) {
        report(false, "exception", error.what());
    }
    std::printf("quant_device_test: %s (%d failed)\n", failed == 0 ? "all checks passed" : "FAILED", failed);
    return failed == 0 ? 0 : 1;
}

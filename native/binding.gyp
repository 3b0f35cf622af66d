# The native addon of mixz: one shared object, mixz.node, built by scripts/build-native.mjs.
#
#   node scripts/build-native.mjs                  Release: -O2, NDEBUG
#   node scripts/build-native.mjs --debug          Debug: -O0 -g
#   node scripts/build-native.mjs --debug --asan   Debug with -Dmixz_asan=1: AddressSanitizer + UBSan
#
# When the script finds nvcc it first compiles native/src/cuda/**/*.cu into one static archive and
# configures with -Dmixz_cuda=1 and the paths below (see the "mixz_cuda==1" condition).
#
# Flags inherited from Node's common.gypi that this project does not want are removed with the
# "!" lists below; see native/README.md for why each one matters.
{
  "variables": {
    # 1: compile and link with AddressSanitizer and UndefinedBehaviorSanitizer.
    # Not called "asan": Node's common.gypi has an "asan" variable meaning "Node itself was built
    # with ASan", and node-gyp's build/config.gypi pins it to the running Node's value (0), which
    # silently overrides -Dasan=1 on the command line.
    "mixz_asan%": 0,
    # 1: link the CUDA backend. Set by build-native.mjs with the three paths, all absolute (make
    # runs in native/build): the toolkit root, the archive of nvcc's objects, libcudart_static.a.
    "mixz_cuda%": 0,
    "mixz_cuda_home%": "",
    "mixz_cuda_lib%": "",
    "mixz_cudart_static%": ""
  },
  "targets": [
    {
      "target_name": "mixz",
      # Listed one by one: gyp has no globbing, and an explicit list makes a forgotten file a
      # link error instead of a silently missing feature.
      "sources": [
        "addon/AddonCommunicator.cc",
        "addon/AddonCuda.cc",
        "addon/AddonEngine.cc",
        "addon/AddonQuant.cc",
        "addon/AddonWatchdog.cc",
        "addon/PromiseWorker.cc",
        "addon/addon.cc",
        "addon/convertError.cc",
        "addon/readArguments.cc",
        "src/backend/cpu_backend.cc",
        "src/backend/make_backend.cc",
        "src/backend/ordered_queue.cc",
        "src/comm/address.cc",
        "src/comm/collectives.cc",
        "src/comm/communicator.cc",
        "src/comm/copy.cc",
        "src/comm/gloo_transport.cc",
        "src/comm/peer.cc",
        "src/comm/quantized_allgather.cc",
        "src/comm/reduce.cc",
        "src/comm/self_test.cc",
        "src/comm/shm_transport.cc",
        "src/common/error.cc",
        "src/common/probe.cc",
        "src/common/thread_pool.cc",
        # Always built, CUDA or not: they only dlopen (no CUDA header or library at build time),
        # so `mixz doctor` can say what a machine has even in a CPU-only build.
        "src/cudalib/cublas_api.cc",
        "src/cudalib/driver_api.cc",
        "src/cudalib/library_search.cc",
        "src/cudalib/nccl_api.cc",
        "src/model/attention.cc",
        "src/model/kernel_arguments.cc",
        "src/model/llama.cc",
        "src/model/sampling.cc",
        "src/optim/adamw.cc",
        "src/quant/benchmark.cc",
        "src/quant/block_quant.cc",
        "src/quant/kernels_avx2.cc",
        "src/quant/kernels_scalar.cc",
        "src/runtime/process.cc",
        "src/runtime/watchdog.cc",
        "src/tensor/dtype.cc",
        "src/tensor/simd.cc",
        "src/zero/collective_runner.cc",
        "src/zero/element_ops.cc",
        "src/zero/engine.cc",
        "src/zero/engine_queries.cc",
        "src/zero/fetcher.cc",
        "src/zero/frozen_weights.cc",
        "src/zero/gradient_reducer.cc",
        "src/zero/layer_views.cc",
        "src/zero/lora_params.cc",
        "src/zero/parameter_store.cc",
        "src/zero/partition_layout.cc",
        "src/zero/secondaries.cc"
      ],
      "include_dirs": [
        "include",
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        # Napi::Error is thrown as a C++ exception; the engine's error model relies on exceptions.
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED"
      ],
      # Node builds itself without exceptions and RTTI and with GNU extensions; the engine needs
      # C++ exceptions (its error model and Gloo's) and RTTI (dynamic_cast across Gloo's transport
      # interfaces), and is written in standard C++17. -Wno-unused-parameter goes too: -Wextra in
      # full.
      "cflags!": ["-fno-exceptions", "-fno-rtti", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      # No -Werror: a newer compiler's new warning must not break a user's install.
      # No -march: the binary must run on any x86-64; SIMD kernels are chosen at run time
      # (__builtin_cpu_supports, see mixz/common/probe.h).
      "cflags": ["-Wall", "-Wextra"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti"],
      "libraries": ["-lgloo", "-lopenblas"],
      "configurations": {
        "Release": {
          # -O2 rather than Node's -O3: predictable code size, and hot loops get explicit
          # vectorized kernels anyway.
          "cflags!": ["-O3"],
          "cflags": ["-O2"],
          "defines": ["NDEBUG"]
        }
      },
      "conditions": [
        ["mixz_asan==1", {
          "cflags": ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"],
          "ldflags": ["-fsanitize=address,undefined"],
          # GCC predefines __SANITIZE_ADDRESS__ but nothing for UBSan; the probe reports this.
          "defines": ["MIXZ_SANITIZE_UNDEFINED=1"]
        }],
        ["mixz_cuda==1", {
          "defines": ["MIXZ_WITH_CUDA=1"],
          "include_dirs": ["<(mixz_cuda_home)/include"],
          # --whole-archive: nothing in the g++ objects names most of the archive's symbols
          # directly (the backend is reached through makeCudaBackend), and a partial pull-in would
          # silently drop kernels' registration code.
          "ldflags": ["-Wl,--whole-archive", "<(mixz_cuda_lib)", "-Wl,--no-whole-archive",
                      # The static runtime's symbols stay private to mixz.node, so a libcudart.so
                      # that PyTorch loads into the same process never binds to ours or we to it.
                      "-Wl,--exclude-libs,libcudart_static.a"],
          # The static CUDA runtime: mixz.node must load where there is no libcudart.so and no
          # driver (it dlopens libcuda.so.1 itself on first use). It needs libdl, librt, pthreads.
          "libraries": ["<(mixz_cudart_static)", "-ldl", "-lrt", "-lpthread"]
        }]
      ]
    }
  ]
}

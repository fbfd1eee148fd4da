{
  "variables": {
    "core_flags": ["-std=c++17", "-O3", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Wextra", "-fvisibility=hidden"]
  },
  "targets": [
    {
      "target_name": "slimtensor_avx2",
      "type": "static_library",
      "sources": ["native/core/quant/quant_avx2.cc", "native/core/lowrank/gemm_avx2.cc", "native/core/lowrank/la_avx2.cc", "native/core/sparse/sparse_avx2.cc", "native/core/model/matmul_avx2.cc", "native/core/cast/cast_avx2.cc", "native/core/calib/gptq_avx2.cc"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["<@(core_flags)", "-fPIC"],
      "xcode_settings": {
        "OTHER_CPLUSPLUSFLAGS": ["<@(core_flags)"]
      },
      "conditions": [
        [
          "target_arch=='x64'",
          {
            "cflags_cc": ["-mavx2", "-mfma", "-mf16c"],
            "xcode_settings": {
              "OTHER_CPLUSPLUSFLAGS": ["-mavx2", "-mfma", "-mf16c"]
            }
          }
        ]
      ]
    },
    {
      "target_name": "slimtensor_avx512",
      "type": "static_library",
      "sources": ["native/core/quant/quant_avx512.cc", "native/core/lowrank/gemm_avx512.cc", "native/core/sparse/sparse_avx512.cc", "native/core/distill/distill_avx512.cc", "native/core/calib/gptq_avx512.cc"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["<@(core_flags)", "-fPIC"],
      "xcode_settings": {
        "OTHER_CPLUSPLUSFLAGS": ["<@(core_flags)"]
      },
      "conditions": [
        [
          "target_arch=='x64'",
          {
            "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma", "-mf16c"],
            "xcode_settings": {
              "OTHER_CPLUSPLUSFLAGS": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma", "-mf16c"]
            }
          }
        ]
      ]
    },
    {
      "target_name": "slimtensor_model_avx512",
      "type": "static_library",
      "sources": ["native/core/model/matmul_avx512.cc"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["<@(core_flags)", "-fPIC"],
      "xcode_settings": {
        "OTHER_CPLUSPLUSFLAGS": ["<@(core_flags)"]
      },
      "conditions": [
        [
          "target_arch=='x64'",
          {
            "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mavx2", "-mfma", "-mf16c"],
            "xcode_settings": {
              "OTHER_CPLUSPLUSFLAGS": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mavx2", "-mfma", "-mf16c"]
            }
          }
        ]
      ]
    },
    {
      "target_name": "slimtensor_distill_avx2",
      "type": "static_library",
      "sources": ["native/core/distill/distill_avx2.cc"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["<@(core_flags)", "-fPIC"],
      "xcode_settings": {
        "OTHER_CPLUSPLUSFLAGS": ["<@(core_flags)"]
      },
      "conditions": [
        [
          "target_arch=='x64'",
          {
            "cflags_cc": ["-mavx2", "-mfma", "-mf16c"],
            "xcode_settings": {
              "OTHER_CPLUSPLUSFLAGS": ["-mavx2", "-mfma", "-mf16c"]
            }
          }
        ]
      ]
    },
    {
      "target_name": "slimtensor",
      "dependencies": ["slimtensor_avx2", "slimtensor_avx512", "slimtensor_model_avx512", "slimtensor_distill_avx2"],
      "sources": ["native/core/cpu.cc", "native/core/cuda_stub.cc", "native/core/quant/quant.cc", "native/core/quant/quant_ref.cc", "native/core/distill/distill.cc", "native/core/distill/distill_ref.cc", "native/addon/job.cc", "native/addon/quant_binding.cc", "native/addon/distill_binding.cc", "native/core/lowrank/gemm.cc", "native/core/lowrank/gemm_ref.cc", "native/core/lowrank/la_ref.cc", "native/core/lowrank/linalg.cc", "native/core/lowrank/lowrank.cc", "native/addon/lowrank_binding.cc", "native/core/sparse/sparse.cc", "native/core/sparse/sparse_ref.cc", "native/addon/sparse_binding.cc", "native/core/model/matmul.cc", "native/core/model/matmul_ref.cc", "native/core/model/forward.cc", "native/core/model/team.cc", "native/core/model/score.cc", "native/addon/model_binding.cc", "native/core/calib/gptq.cc", "native/core/calib/gptq_ref.cc", "native/core/calib/stats.cc", "native/addon/calib_binding.cc", "native/core/cast/cast.cc", "native/core/cast/cast_ref.cc", "native/addon/cast_binding.cc", "native/addon/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS", "NODE_API_NO_EXTERNAL_BUFFERS_ALLOWED", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["<@(core_flags)", "-fexceptions"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "OTHER_CPLUSPLUSFLAGS": ["<@(core_flags)", "-fexceptions"]
      },
      "msvs_settings": {
        "VCCLCompilerTool": {
          "ExceptionHandling": 1
        }
      }
    }
  ]
}

// The engine's vocabulary: element types, a non-owning view of contiguous
// memory, and the Status every entry point returns. No Node headers here.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace st {

// Values match lib/tensor.ts DTYPE_CODES; the addon passes them through.
enum class DType : int32_t { F32 = 0, F16 = 1, BF16 = 2, I8 = 3, U8 = 4, I32 = 5, I64 = 6 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::I8: case DType::U8: return 1;
    case DType::I64: return 8;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::I8: return "i8";
    case DType::U8: return "u8";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
  }
  return "?";
}

inline bool is_float_dtype(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// Error codes shared with lib/errors.ts (the string is what JS sees).
enum class Code { Ok, Shape, DType, Value, Format, Unsupported, Detached, Internal };

inline const char* code_name(Code c) {
  switch (c) {
    case Code::Ok: return "OK";
    case Code::Shape: return "ERR_SHAPE";
    case Code::DType: return "ERR_DTYPE";
    case Code::Value: return "ERR_VALUE";
    case Code::Format: return "ERR_FORMAT";
    case Code::Unsupported: return "ERR_UNSUPPORTED";
    case Code::Detached: return "ERR_DETACHED";
    case Code::Internal: return "ERR_INTERNAL";
  }
  return "ERR_INTERNAL";
}

struct Status {
  Code code = Code::Ok;
  std::string message;
  bool ok() const { return code == Code::Ok; }
  static Status Ok() { return {}; }
  static Status Error(Code c, std::string m) { return {c, std::move(m)}; }
};

// A row-major matrix view: the shape every kernel here works on. Higher-rank
// tensors are flattened to [product of leading dims, last dim] by the caller.
struct MatrixView {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
};

// Which implementation to run. Auto picks the fastest the CPU supports;
// the others exist so tests and benchmarks can pin one (lib/options.ts maps
// the names). A room without an AVX-512 kernel answers Avx512 with
// ERR_UNSUPPORTED; Avx2 pins AVX2 even where AVX-512 loops exist.
enum class Kernel : int32_t { Auto = 0, Reference = 1, Avx2 = 2, Cuda = 3, Avx512 = 4 };

}  // namespace st

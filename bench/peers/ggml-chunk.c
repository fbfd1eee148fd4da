// Benchmark-only peer: times ggml's ggml_quantize_chunk on the quantize
// benchmark's own input, without and with its importance matrix, on one
// thread, and writes ggml's blocks so the benchmark can compare them with
// slimtensor's byte for byte. Built by bench/quantize.ts at run time against
// the ggml library beside ../shared/peers/llama.cpp/ggml-quant-bench (never
// part of slimtensor). The two ggml entry points it calls are declared here
// (the peer folder ships the library without its headers).
//
// usage: ggml-chunk INPUT.f32 IMPORTANCE.f32 ROWS COLS RUNS OUTDIR TYPE...
// TYPE: q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k q6_k. For each type and
// each path ("plain": no importance, ggml's reference quantizer; "imatrix")
// it prints "TYPE PATH CPU_SECONDS WALL_SECONDS", the best of RUNS by thread
// CPU time, and writes OUTDIR/TYPE.PATH (the blocks of all rows).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

size_t ggml_quantize_chunk(int type, const float* src, void* dst, int64_t start, int64_t nrows, int64_t n_per_row,
                           const float* imatrix);
void ggml_quantize_init(int type);

// ggml's type numbers and block sizes (values, bytes) of the formats slimtensor writes.
static const struct { const char* name; int type; int values; int bytes; } kTypes[] = {
    {"q4_0", 2, 32, 18},   {"q4_1", 3, 32, 20},   {"q5_0", 6, 32, 22},   {"q5_1", 7, 32, 24},   {"q8_0", 8, 32, 34},
    {"q2_k", 10, 256, 84}, {"q3_k", 11, 256, 110}, {"q4_k", 12, 256, 144}, {"q5_k", 13, 256, 176}, {"q6_k", 14, 256, 210},
};

static double seconds(clockid_t clock) {
  struct timespec t;
  clock_gettime(clock, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static float* read_f32(const char* file, size_t count) {
  FILE* f = fopen(file, "rb");
  float* x = malloc(count * sizeof(float));
  if (!f || !x || fread(x, sizeof(float), count, f) != count) {
    fprintf(stderr, "ggml-chunk: cannot read %zu floats from %s\n", count, file);
    exit(2);
  }
  fclose(f);
  return x;
}

int main(int argc, char** argv) {
  if (argc < 8) {
    fprintf(stderr, "usage: ggml-chunk INPUT.f32 IMPORTANCE.f32 ROWS COLS RUNS OUTDIR TYPE...\n");
    return 2;
  }
  const int64_t rows = atoll(argv[3]), cols = atoll(argv[4]);
  const int runs = atoi(argv[5]);
  const float* x = read_f32(argv[1], (size_t)(rows * cols));
  const float* importance = read_f32(argv[2], (size_t)cols);
  for (int a = 7; a < argc; a++) {
    int k = -1;
    for (int i = 0; i < (int)(sizeof kTypes / sizeof kTypes[0]); i++)
      if (strcmp(argv[a], kTypes[i].name) == 0) k = i;
    if (k < 0 || cols % kTypes[k].values != 0) {
      fprintf(stderr, "ggml-chunk: unknown type %s, or %lld columns not a multiple of its block\n", argv[a], (long long)cols);
      return 2;
    }
    const size_t bytes = (size_t)(rows * (cols / kTypes[k].values) * kTypes[k].bytes);
    uint8_t* out = malloc(bytes);
    ggml_quantize_init(kTypes[k].type);
    for (int weighted = 0; weighted < 2; weighted++) {
      double best_cpu = 1e30, best_wall = 0;
      for (int r = 0; r < runs; r++) {
        const double c0 = seconds(CLOCK_THREAD_CPUTIME_ID), w0 = seconds(CLOCK_MONOTONIC);
        ggml_quantize_chunk(kTypes[k].type, x, out, 0, rows, cols, weighted ? importance : NULL);
        const double c = seconds(CLOCK_THREAD_CPUTIME_ID) - c0, w = seconds(CLOCK_MONOTONIC) - w0;
        if (c < best_cpu) best_cpu = c, best_wall = w;
      }
      const char* path = weighted ? "imatrix" : "plain";
      char file[4096];
      snprintf(file, sizeof file, "%s/%s.%s", argv[6], kTypes[k].name, path);
      FILE* f = fopen(file, "wb");
      if (!f || fwrite(out, 1, bytes, f) != bytes || fclose(f) != 0) {
        fprintf(stderr, "ggml-chunk: cannot write %s\n", file);
        return 2;
      }
      printf("%s %s %.6f %.6f\n", kTypes[k].name, path, best_cpu, best_wall);
      fflush(stdout);
    }
    free(out);
  }
  return 0;
}

#!/usr/bin/env node
// Builds the quant, distill, lowrank, sparse and cast cores' native tests with
// AddressSanitizer and UndefinedBehaviorSanitizer and runs them; also checks
// that the SIMD objects define no weak (linker-mergeable) symbols, which
// could otherwise smuggle AVX2 code into the baseline paths. Skips with a message when no
// C++ compiler is available (the addon build would have failed anyway).
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const out = path.join(root, 'build', 'native-test');
const cxx = process.env.CXX || 'g++';
if (spawnSync(cxx, ['--version']).status !== 0) {
  console.log(`skipped: no C++ compiler (${cxx}) for the sanitizer build`);
  process.exit(0);
}
fs.mkdirSync(out, { recursive: true });

const core = ['native/core/cpu.cc', 'native/core/cuda_stub.cc', 'native/core/quant/quant.cc', 'native/core/quant/quant_ref.cc'];
const flags = ['-std=c++17', '-O1', '-g', '-ffp-contract=off', '-Wall', '-Wextra', '-Werror', '-fsanitize=address,undefined', '-fno-sanitize-recover=all', '-Inative/core'];

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
  if (r.status !== 0) process.exit(r.status || 1);
}

const simd = [
  ['quant_avx2', ['-mavx2', '-mfma', '-mf16c']],
  ['quant_avx512', ['-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx2', '-mfma', '-mf16c']],
];
const objects = [];
function checkNoWeakSymbols(name, obj) {
  const nm = spawnSync('nm', ['-C', '--defined-only', obj], { encoding: 'utf8' });
  if (nm.status === 0) {
    // DW.ref.* are exception-personality pointers (data), not code.
    const weak = nm.stdout.split('\n').filter((l) => / [WVu] /.test(l) && !l.includes('DW.ref.'));
    if (weak.length) {
      console.error(`${name}.o defines weak symbols (a SIMD copy could replace the baseline one):\n` + weak.join('\n'));
      process.exit(1);
    }
  }
}

// The distill core's test compiles in the background (on another core)
// while the quant test below builds and runs; it is linked and run last.
const distillOut = path.join(out, 'distill');
fs.mkdirSync(distillOut, { recursive: true });
const distillSimd = path.join(distillOut, 'distill_avx2.o');
const distillSimd512 = path.join(distillOut, 'distill_avx512.o');
const distillSources = ['native/core/cpu.cc', 'native/core/cuda_stub.cc', 'native/core/distill/distill.cc', 'native/core/distill/distill_ref.cc', 'native/core/device.cc', 'native/core/distill/distill_device.cc', 'test/native/distill_test.cc'];
const absFlags = flags.map((f) => (f === '-Inative/core' ? `-I${path.join(root, 'native', 'core')}` : f));
function background(args, cwd) {
  const child = spawn(cxx, args, { cwd, stdio: 'inherit' });
  return new Promise((resolve) => child.on('close', (code) => resolve(code)));
}
const distillBuilds = [
  background([...absFlags, '-mavx2', '-mfma', '-mf16c', '-c', path.join(root, 'native/core/distill/distill_avx2.cc'), '-o', distillSimd], root),
  background([...absFlags, '-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx2', '-mfma', '-mf16c', '-c', path.join(root, 'native/core/distill/distill_avx512.cc'), '-o', distillSimd512], root),
  background([...absFlags, '-c', ...distillSources.map((f) => path.join(root, f))], distillOut), // one .o per source, in distillOut
];

for (const [name, isa] of simd) {
  const obj = path.join(out, `${name}.o`);
  run(cxx, [...flags, ...isa, '-c', `native/core/quant/${name}.cc`, '-o', obj]);
  checkNoWeakSymbols(name, obj);
  objects.push(obj);
}
const exe = path.join(out, 'quant_core_test');
run(cxx, [...flags, ...core, 'test/native/quant_core_test.cc', ...objects, '-o', exe, '-lpthread']);
const env = { ...process.env, ASAN_OPTIONS: 'detect_leaks=1', UBSAN_OPTIONS: 'print_stacktrace=1' };
// Every instruction set the CPU has, then AVX2 alone (the AVX-512 search
// loops replace the AVX2 ones when present; both must match the reference).
run(exe, ['test/fixtures/ggml'], { env });
run(exe, ['test/fixtures/ggml'], { env: { ...env, SLIMTENSOR_ISA: 'avx2' } });
// The thread pool alone: exceptions thrown by bodies reach the caller.
const poolExe = path.join(out, 'pool_test');
run(cxx, [...flags, 'native/core/cpu.cc', 'test/native/pool_test.cc', '-o', poolExe, '-lpthread']);
run(poolExe, [], { env });
// The distill core: AVX2 vs reference, exp accuracy, outputs, errors.
Promise.all(distillBuilds).then((codes) => {
  if (codes.some((c) => c !== 0)) process.exit(1);
  checkNoWeakSymbols('distill_avx2', distillSimd);
  checkNoWeakSymbols('distill_avx512', distillSimd512);
  const distillExe = path.join(out, 'distill_core_test');
  const objs = distillSources.map((f) => path.join(distillOut, `${path.basename(f, '.cc')}.o`));
  run(cxx, [...flags, ...objs, distillSimd, distillSimd512, '-o', distillExe, '-lpthread']);
  run(distillExe, [], { env });
  run(distillExe, [], { env: { ...env, SLIMTENSOR_ISA: 'avx2' } });
});

// The lowrank core: GEMM kernels (AVX2, AVX-512) vs the reference bit for
// bit, the f64 kernels of both builds, SVD, errors, concurrent calls. Its
// files compile in parallel in the background; run on every ISA the CPU
// has, then AVX2 alone, then the scalar reference alone.
{
  const lowrankOut = path.join(out, 'lowrank');
  fs.mkdirSync(lowrankOut, { recursive: true });
  const avx2 = ['-mavx2', '-mfma', '-mf16c'];
  const lowrankSimd = [
    ['gemm_avx2', avx2],
    ['la_avx2', avx2],
    ['gemm_avx512', ['-mavx512f', '-mavx512bw', '-mavx512vl', ...avx2]],
  ];
  const lowrankSources = ['native/core/cpu.cc', 'native/core/cuda_stub.cc', 'native/core/lowrank/gemm.cc', 'native/core/lowrank/gemm_ref.cc', 'native/core/lowrank/la_ref.cc', 'native/core/lowrank/linalg.cc', 'native/core/lowrank/lowrank.cc', 'native/core/device.cc', 'native/core/lowrank/lowrank_device.cc', 'test/native/lowrank_core_test.cc'];
  const objectOf = (f) => path.join(lowrankOut, `${path.basename(f, '.cc')}.o`);
  const builds = [
    ...lowrankSimd.map(([name, isa]) => background([...absFlags, ...isa, '-c', path.join(root, `native/core/lowrank/${name}.cc`), '-o', path.join(lowrankOut, `${name}.o`)], root)),
    ...lowrankSources.map((f) => background([...absFlags, '-c', path.join(root, f), '-o', objectOf(f)], root)),
  ];
  Promise.all(builds).then((codes) => {
    if (codes.some((c) => c !== 0)) process.exit(1);
    for (const [name] of lowrankSimd) checkNoWeakSymbols(name, path.join(lowrankOut, `${name}.o`));
    const lowrankExe = path.join(out, 'lowrank_core_test');
    run(cxx, [...flags, ...lowrankSources.map(objectOf), ...lowrankSimd.map(([name]) => path.join(lowrankOut, `${name}.o`)), '-o', lowrankExe, '-lpthread']);
    run(lowrankExe, [], { env });
    run(lowrankExe, [], { env: { ...env, SLIMTENSOR_ISA: 'avx2' } });
    run(lowrankExe, [], { env: { ...env, SLIMTENSOR_ISA: 'scalar' } });
  });
}

// The sparse core: selection (AVX2) and spmm24 (AVX2, AVX-512) against the
// reference bit for bit with poisoned outputs, int4/int8 compression and
// expansion, unstructured pruning, errors. Compiled in the background like
// lowrank; run on every ISA the CPU has, then AVX2 alone, then the scalar
// reference alone (where the SIMD kernels must refuse to run).
{
  const sparseOut = path.join(out, 'sparse');
  fs.mkdirSync(sparseOut, { recursive: true });
  const avx2 = ['-mavx2', '-mfma', '-mf16c'];
  const sparseSimd = [
    ['sparse_avx2', avx2],
    ['sparse_avx512', ['-mavx512f', '-mavx512bw', '-mavx512vl', ...avx2]],
  ];
  const sparseSources = ['native/core/cpu.cc', 'native/core/cuda_stub.cc', 'native/core/sparse/sparse.cc', 'native/core/sparse/sparse_ref.cc', 'test/native/sparse_core_test.cc'];
  const objectOf = (f) => path.join(sparseOut, `${path.basename(f, '.cc')}.o`);
  const builds = [
    ...sparseSimd.map(([name, isa]) => background([...absFlags, ...isa, '-c', path.join(root, `native/core/sparse/${name}.cc`), '-o', path.join(sparseOut, `${name}.o`)], root)),
    ...sparseSources.map((f) => background([...absFlags, '-c', path.join(root, f), '-o', objectOf(f)], root)),
  ];
  Promise.all(builds).then((codes) => {
    if (codes.some((c) => c !== 0)) process.exit(1);
    for (const [name] of sparseSimd) checkNoWeakSymbols(name, path.join(sparseOut, `${name}.o`));
    const sparseExe = path.join(out, 'sparse_core_test');
    run(cxx, [...flags, ...sparseSources.map(objectOf), ...sparseSimd.map(([name]) => path.join(sparseOut, `${name}.o`)), '-o', sparseExe, '-lpthread']);
    run(sparseExe, [], { env });
    run(sparseExe, [], { env: { ...env, SLIMTENSOR_ISA: 'avx2' } });
    run(sparseExe, [], { env: { ...env, SLIMTENSOR_ISA: 'scalar' } });
  });
}

// The cast core: the AVX2 + F16C kernel against the reference bit for bit
// on every 16-bit pattern and random f32 patterns, in place, errors. Run on
// every ISA the CPU has, then the scalar reference alone.
{
  const castOut = path.join(out, 'cast');
  fs.mkdirSync(castOut, { recursive: true });
  const castSimd = path.join(castOut, 'cast_avx2.o');
  const castSources = ['native/core/cpu.cc', 'native/core/cast/cast.cc', 'native/core/cast/cast_ref.cc', 'test/native/cast_core_test.cc'];
  const objectOf = (f) => path.join(castOut, `${path.basename(f, '.cc')}.o`);
  const builds = [
    background([...absFlags, '-mavx2', '-mfma', '-mf16c', '-c', path.join(root, 'native/core/cast/cast_avx2.cc'), '-o', castSimd], root),
    ...castSources.map((f) => background([...absFlags, '-c', path.join(root, f), '-o', objectOf(f)], root)),
  ];
  Promise.all(builds).then((codes) => {
    if (codes.some((c) => c !== 0)) process.exit(1);
    checkNoWeakSymbols('cast_avx2', castSimd);
    const castExe = path.join(out, 'cast_core_test');
    run(cxx, [...flags, ...castSources.map(objectOf), castSimd, '-o', castExe, '-lpthread']);
    run(castExe, [], { env });
    run(castExe, [], { env: { ...env, SLIMTENSOR_ISA: 'scalar' } });
  });
}

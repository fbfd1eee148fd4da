#!/usr/bin/env node
// Builds the quant core's native tests with AddressSanitizer and
// UndefinedBehaviorSanitizer and runs them; also checks that the AVX2
// object defines no weak (linker-mergeable) symbols, which could otherwise
// smuggle AVX2 code into the baseline paths. Skips with a message when no
// C++ compiler is available (the addon build would have failed anyway).
'use strict';
const { spawnSync } = require('node:child_process');
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
for (const [name, isa] of simd) {
  const obj = path.join(out, `${name}.o`);
  run(cxx, [...flags, ...isa, '-c', `native/core/quant/${name}.cc`, '-o', obj]);
  const nm = spawnSync('nm', ['-C', '--defined-only', obj], { encoding: 'utf8' });
  if (nm.status === 0) {
    // DW.ref.* are exception-personality pointers (data), not code.
    const weak = nm.stdout.split('\n').filter((l) => / [WVu] /.test(l) && !l.includes('DW.ref.'));
    if (weak.length) {
      console.error(`${name}.o defines weak symbols (a SIMD copy could replace the baseline one):\n` + weak.join('\n'));
      process.exit(1);
    }
  }
  objects.push(obj);
}
const exe = path.join(out, 'quant_core_test');
run(cxx, [...flags, ...core, 'test/native/quant_core_test.cc', ...objects, '-o', exe, '-lpthread']);
const env = { ...process.env, ASAN_OPTIONS: 'detect_leaks=1', UBSAN_OPTIONS: 'print_stacktrace=1' };
// Every instruction set the CPU has, then AVX2 alone (the AVX-512 search
// loops replace the AVX2 ones when present; both must match the reference).
run(exe, ['test/fixtures/ggml'], { env });
run(exe, ['test/fixtures/ggml'], { env: { ...env, SLIMTENSOR_ISA: 'avx2' } });

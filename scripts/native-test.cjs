#!/usr/bin/env node
// npm test's native step: each room's C++ core test (test/native/*_test.cc,
// harness test/native/check.h) built with AddressSanitizer and
// UndefinedBehaviorSanitizer and run under each SLIMTENSOR_ISA setting its
// room lists; and every SIMD object of the addon (node-gyp's, in
// build/Release/obj.target, the code that ships) checked for weak
// (linker-mergeable) symbols, which could smuggle AVX2 code into the
// baseline paths. `node scripts/native-test.cjs quant sparse` runs some rooms.
//
// Adding a room's test is one entry in ROOMS below. The build is a small job
// graph run on every core: each object is compiled once (cpu.cc,
// cuda_stub.cc and device.cc serve every room), the slowest chains first, and kept in
// build/native-test/ with a stamp (compiler, flags, and a hash of the source
// and every header it read), so a run without native changes compiles
// nothing. Writes .tmp/native-summary.json (passed, failed, skipped: the
// tests' counted checks plus the weak-symbol checks) for npm test's closing
// line.
//
// Without a C++ compiler or nm it fails where the addon was compiled here
// (build/Release/slimtensor.node exists: this machine builds C++), and
// skips, counted, where the addon came prebuilt. A stale addon (a native
// file newer than it) is rebuilt first.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { addon, rebuildStaleAddon, root } = require('./builds.cjs');

const out = path.join(root, 'build', 'native-test');
const summaryFile = path.join(root, '.tmp', 'native-summary.json');

const x64 = process.arch === 'x64';
// SIMD files compile to stubs elsewhere (their bodies are guarded by
// __AVX2__ / __AVX512F__), like binding.gyp's target_arch condition.
const AVX2 = x64 ? ['-mavx2', '-mfma', '-mf16c'] : [];
const AVX512 = x64 ? ['-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx2', '-mfma', '-mf16c'] : [];

// Linked into every room's test (device.cc: the host side of device calls,
// which the CUDA rooms' tests drive through a fake runtime, fake_device.h).
const COMMON = ['native/core/cpu.cc', 'native/core/cuda_stub.cc', 'native/core/device.cc'];

// One entry per room:
//   test     the test's main (includes check.h, ends with st::test::finish)
//   sources  the room's baseline core files (COMMON is added)
//   simd     [file, its ISA flags]: compiled with those flags; its addon
//            object is checked for weak symbols
//   isas     the settings to run it under: 'all' (every ISA the CPU has),
//            and SLIMTENSOR_ISA values: 'avx2' (AVX-512 off), 'scalar'
//            (the reference alone)
//   args     command-line arguments (paths are relative to the repository)
//   opt      the optimisation of the room's files (default OPT, below)
//   runSeconds  about how long one run takes on 2 cores, when it is long:
//            a fresh clone starts the longest chains first (later runs use
//            the times measured, kept in build/native-test/times.json)
const ROOMS = [
  {
    name: 'quant',
    test: 'test/native/quant_core_test.cc',
    sources: ['native/core/quant/quant.cc', 'native/core/quant/quant_ref.cc'],
    simd: [
      ['native/core/quant/quant_avx2.cc', AVX2],
      ['native/core/quant/quant_avx512.cc', AVX512],
    ],
    isas: ['all', 'avx2'],
    args: ['test/fixtures/ggml'],
  },
  {
    name: 'distill',
    test: 'test/native/distill_test.cc',
    sources: ['native/core/distill/distill.cc', 'native/core/distill/distill_ref.cc', 'native/core/distill/distill_device.cc'],
    simd: [
      ['native/core/distill/distill_avx2.cc', AVX2],
      ['native/core/distill/distill_avx512.cc', AVX512],
    ],
    isas: ['all', 'avx2'],
    // Its first run is long (exp over 4.5 million inputs, 32 MiB
    // gradients): -Og halves it (21 s of CPU against 45 s) for 15 s more
    // compiling.
    opt: '-Og',
    runSeconds: 15,
  },
  {
    name: 'lowrank',
    test: 'test/native/lowrank_core_test.cc',
    sources: [
      'native/core/lowrank/gemm.cc',
      'native/core/lowrank/gemm_ref.cc',
      'native/core/lowrank/la_ref.cc',
      'native/core/lowrank/linalg.cc',
      'native/core/lowrank/lowrank.cc',
      'native/core/lowrank/lowrank_device.cc',
    ],
    simd: [
      ['native/core/lowrank/gemm_avx2.cc', AVX2],
      ['native/core/lowrank/la_avx2.cc', AVX2],
      ['native/core/lowrank/gemm_avx512.cc', AVX512],
    ],
    isas: ['all', 'avx2', 'scalar'],
  },
  {
    name: 'sparse',
    test: 'test/native/sparse_core_test.cc',
    sources: ['native/core/sparse/sparse.cc', 'native/core/sparse/sparse_ref.cc'],
    simd: [
      ['native/core/sparse/sparse_avx2.cc', AVX2],
      ['native/core/sparse/sparse_avx512.cc', AVX512],
    ],
    isas: ['all', 'avx2', 'scalar'],
  },
  {
    // The runtime core: the thread team, every weight format's matmul on
    // every kernel set against a double product, a tiny model from a file on
    // each set, the errors, logit scoring. It links the rooms it calls
    // (quant for embedding rows, sparse for 2:4, lowrank's GEMM for float
    // weights).
    name: 'model',
    test: 'test/native/model_core_test.cc',
    sources: [
      'native/core/quant/quant.cc',
      'native/core/quant/quant_ref.cc',
      'native/core/sparse/sparse.cc',
      'native/core/sparse/sparse_ref.cc',
      'native/core/lowrank/gemm.cc',
      'native/core/lowrank/gemm_ref.cc',
      'native/core/model/matmul.cc',
      'native/core/model/matmul_ref.cc',
      'native/core/model/forward.cc',
      'native/core/model/team.cc',
      'native/core/model/score.cc',
    ],
    simd: [
      ['native/core/model/matmul_avx2.cc', AVX2],
      ['native/core/model/matmul_avx512.cc', x64 ? [...AVX512, '-mavx512vnni'] : []],
      ['native/core/quant/quant_avx2.cc', AVX2],
      ['native/core/quant/quant_avx512.cc', AVX512],
      ['native/core/sparse/sparse_avx2.cc', AVX2],
      ['native/core/sparse/sparse_avx512.cc', AVX512],
      ['native/core/lowrank/gemm_avx2.cc', AVX2],
      ['native/core/lowrank/gemm_avx512.cc', AVX512],
    ],
    isas: ['all', 'avx2', 'scalar'],
  },
  {
    // GPTQ on the quant room's formats and the lowrank room's GEMM and
    // Cholesky: their files come along (the kernels are theirs).
    name: 'calib',
    test: 'test/native/calib_test.cc',
    sources: [
      'native/core/calib/gptq.cc',
      'native/core/calib/gptq_ref.cc',
      'native/core/calib/stats.cc',
      'native/core/quant/quant.cc',
      'native/core/quant/quant_ref.cc',
      'native/core/lowrank/gemm.cc',
      'native/core/lowrank/gemm_ref.cc',
      'native/core/lowrank/la_ref.cc',
      'native/core/lowrank/linalg.cc',
    ],
    simd: [
      ['native/core/quant/quant_avx2.cc', AVX2],
      ['native/core/quant/quant_avx512.cc', AVX512],
      ['native/core/lowrank/gemm_avx2.cc', AVX2],
      ['native/core/lowrank/la_avx2.cc', AVX2],
      ['native/core/lowrank/gemm_avx512.cc', AVX512],
      ['native/core/calib/gptq_avx2.cc', AVX2],
      ['native/core/calib/gptq_avx512.cc', AVX512],
    ],
    isas: ['all', 'avx2', 'scalar'],
  },
  {
    // f32/f16/bf16 conversion; no AVX-512 kernel, so 'avx2' would repeat 'all'.
    name: 'cast',
    test: 'test/native/cast_core_test.cc',
    sources: ['native/core/cast/cast.cc', 'native/core/cast/cast_ref.cc'],
    simd: [['native/core/cast/cast_avx2.cc', AVX2]],
    isas: ['all', 'scalar'],
  },
  {
    // The thread pool alone (cpu.cc): exceptions thrown by bodies reach the
    // caller. It runs no kernel, so one ISA setting is enough.
    name: 'pool',
    test: 'test/native/pool_test.cc',
    sources: [],
    simd: [],
    isas: ['all'],
  },
];

// OPT = -O0: the sanitizers instrument every load, store and arithmetic
// operation (nothing is optimised away before they see them), and the build
// costs half of -Og's and an eighth of -O1's (distill_avx2.cc's templates:
// 14 s of CPU against 24 s and 106 s); a room whose runs are long picks -Og
// (its `opt`). -g1: the line tables ASan/UBSan reports need.
const OPT = '-O0';
const FLAGS = ['-std=c++17', '-g1', '-ffp-contract=off', '-Wall', '-Wextra', '-Werror', '-fsanitize=address,undefined', '-fno-sanitize-recover=all', '-Inative/core'];
const RUN_ENV = { ASAN_OPTIONS: 'detect_leaks=1', UBSAN_OPTIONS: 'print_stacktrace=1' };

const only = process.argv.slice(2);
const rooms = only.length ? ROOMS.filter((r) => only.includes(r.name)) : ROOMS;
if (rooms.length !== (only.length || ROOMS.length)) {
  console.error(`unknown room in ${only.join(', ')}; the rooms: ${ROOMS.map((r) => r.name).join(', ')}`);
  process.exit(2);
}
const cxx = process.env.CXX || 'g++';
const parallel = Math.max(1, Number(process.env.SLIMTENSOR_TEST_JOBS) || (os.availableParallelism ? os.availableParallelism() : os.cpus().length));
const counts = { passed: 0, failed: 0, skipped: 0 };

function writeSummary(extra = {}) {
  fs.mkdirSync(path.dirname(summaryFile), { recursive: true });
  fs.writeFileSync(summaryFile, JSON.stringify({ ...counts, ...extra }) + '\n');
}

// What is skipped, counted, when nothing can be built: each run and each
// weak-symbol check.
function runs() {
  return rooms.reduce((n, r) => n + r.isas.length + r.simd.length, 0);
}

// --- no toolchain: fail where C++ is built here, skip where it is not -------

function missingTool() {
  if (spawnSync(cxx, ['--version']).status !== 0) return `no C++ compiler (${cxx})`;
  if (spawnSync('nm', ['--version']).status !== 0) return 'no nm (binutils) for the weak-symbol check of the SIMD objects';
  return null;
}

// node-gyp's objects: this machine compiled the addon.
const addonObjects = path.join(root, 'build', 'Release', 'obj.target');
const builtHere = fs.existsSync(addonObjects);
const missing = missingTool();
if (missing) {
  if (builtHere) {
    counts.failed = 1;
    writeSummary();
    console.error(`native tests FAILED: ${missing}, but the addon was compiled on this machine (${path.relative(root, addonObjects)}); put the toolchain on PATH`);
    process.exit(1);
  }
  counts.skipped = runs();
  writeSummary();
  console.log(`native tests skipped (${counts.skipped} runs and checks): ${missing}, and the addon is a prebuilt one`);
  process.exit(0);
}
if (fs.existsSync(addon) || builtHere) {
  try {
    rebuildStaleAddon(parallel);
  } catch (e) {
    counts.failed = 1;
    writeSummary();
    console.error(`native tests FAILED: ${e.message}`);
    process.exit(1);
  }
}

// --- the stamp cache ---------------------------------------------------------

const compilerId = spawnSync(cxx, ['--version'], { encoding: 'utf8' }).stdout.trim() + `\n${process.arch}`;
const hashes = new Map();
function hashOf(file) {
  if (!hashes.has(file)) {
    let h = null;
    try {
      h = crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
    } catch {
      // gone: whatever depended on it is stale
    }
    hashes.set(file, h);
  }
  return hashes.get(file);
}

// The files a `-MMD` dependency file lists (the source and its headers).
function depsOf(depFile) {
  const text = fs.readFileSync(depFile, 'utf8').replace(/\\\r?\n/g, ' ');
  const colon = text.indexOf(': ');
  return text.slice(colon + 2).split(/\s+/).filter(Boolean).map((f) => path.resolve(root, f));
}

function upToDate(output, key) {
  try {
    const stamp = JSON.parse(fs.readFileSync(`${output}.stamp`, 'utf8'));
    if (stamp.key !== key || !fs.existsSync(output)) return false;
    return Object.entries(stamp.deps).every(([f, h]) => hashOf(f) === h);
  } catch {
    return false;
  }
}

function writeStamp(output, key, depFiles) {
  const deps = {};
  for (const f of depFiles) {
    hashes.delete(f);
    deps[f] = hashOf(f);
  }
  fs.writeFileSync(`${output}.stamp`, JSON.stringify({ key, deps }));
}

// --- processes ---------------------------------------------------------------

function exec(cmd, args, env = process.env) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, env });
    let text = '';
    child.stdout.on('data', (d) => (text += d));
    child.stderr.on('data', (d) => (text += d));
    child.on('error', (e) => resolve({ code: -1, text: text + e.message }));
    child.on('close', (code, signal) => resolve({ code: code === null ? `signal ${signal}` : code, text }));
  });
}

function report(title, text) {
  process.stdout.write(`\n── ${title}\n${text.endsWith('\n') || !text ? text : `${text}\n`}`);
}

// --- the job graph -------------------------------------------------------------

const timesFile = path.join(out, 'times.json');
let times = {};
try {
  times = JSON.parse(fs.readFileSync(timesFile, 'utf8'));
} catch {
  // first run: the default estimates below
}

const jobs = new Map();
function job(key, deps, estimate, work) {
  jobs.set(key, { key, deps, cost: times[key] ?? estimate, work });
  return key;
}

const objects = new Map(); // source -> { job, obj, flagKey }
let compiled = 0;
function objectFor(source, opt, isaFlags) {
  const flagKey = [opt, ...isaFlags].join(' ');
  const known = objects.get(source);
  if (known) {
    if (known.flagKey !== flagKey) throw new Error(`${source} is listed with two flag sets (${known.flagKey} / ${flagKey})`);
    return known;
  }
  const obj = path.join(out, 'obj', `${source.replace(/[/\\]/g, '_').replace(/\.cc$/, '')}.o`);
  const args = [...FLAGS, opt, ...isaFlags, '-MMD', '-MF', `${obj}.d`, '-c', source, '-o', obj];
  const key = JSON.stringify([compilerId, args]);
  const name = job(`compile ${source}`, [], isaFlags.length ? 8 : 2, async () => {
    if (!upToDate(obj, key)) {
      const r = await exec(cxx, args);
      if (r.code !== 0) {
        report(`compile ${source} FAILED (${r.code})`, r.text);
        counts.failed += 1;
        return false;
      }
      if (r.text) report(`compile ${source}`, r.text);
      writeStamp(obj, key, depsOf(`${obj}.d`));
      compiled += 1;
    }
    return true;
  });
  const entry = { job: name, obj, flagKey };
  objects.set(source, entry);
  return entry;
}

// The addon's object of a SIMD source (node-gyp puts each static library's
// objects under obj.target/<target>/).
function addonObjectOf(source) {
  const rel = source.replace(/\.cc$/, '.o');
  for (const target of fs.existsSync(addonObjects) ? fs.readdirSync(addonObjects) : []) {
    const o = path.join(addonObjects, target, rel);
    if (fs.existsSync(o)) return o;
  }
  return null;
}

async function checkNoWeakSymbols(source) {
  if (!builtHere) {
    counts.skipped += 1;
    report(`weak symbols of ${source}: skipped`, `SKIP: the addon is a prebuilt one (no ${path.relative(root, addonObjects)} to inspect)`);
    return true;
  }
  const obj = addonObjectOf(source);
  if (!obj) {
    report(`weak symbols of ${source} FAILED`, `binding.gyp builds no object for it (not under ${path.relative(root, addonObjects)}): register it there`);
    counts.failed += 1;
    return false;
  }
  // -O3 objects: at the sanitizer build's -O0 every inline function a SIMD
  // file calls (std::round, shared helpers) is emitted weak, which the
  // shipped code does not do.
  const r = await exec('nm', ['-C', '--defined-only', obj]);
  if (r.code !== 0) {
    report(`nm ${path.relative(root, obj)} FAILED`, r.text);
    counts.failed += 1;
    return false;
  }
  // DW.ref.* are exception-personality pointers (data), not code.
  const weak = r.text.split('\n').filter((l) => / [WVu] /.test(l) && !l.includes('DW.ref.'));
  if (weak.length) {
    report(`${source}: weak symbols (a SIMD copy could replace the baseline one) FAILED`, weak.join('\n'));
    counts.failed += 1;
    return false;
  }
  counts.passed += 1;
  return true;
}

for (const room of rooms) {
  const opt = room.opt ?? OPT;
  const compiles = [...COMMON.map((f) => objectFor(f, OPT, [])), ...[...room.sources, room.test].map((f) => objectFor(f, opt, []))];
  const simd = room.simd.map(([f, flags]) => objectFor(f, opt, flags));
  for (const [f] of room.simd) job(`weak symbols ${f}`, [], 0.1, () => checkNoWeakSymbols(f));
  const objs = [...compiles, ...simd].map((o) => o.obj);
  const exe = path.join(out, `${room.name}_test`);
  const linkArgs = [...FLAGS, ...objs, '-o', exe, '-lpthread'];
  const link = job(`link ${room.name}`, [...compiles, ...simd].map((o) => o.job), 1, async () => {
    const key = JSON.stringify([compilerId, linkArgs, objs.map((o) => fs.statSync(o).mtimeMs)]);
    if (upToDate(exe, key)) return true;
    const r = await exec(cxx, linkArgs);
    if (r.code !== 0) {
      report(`link ${room.name} FAILED (${r.code})`, r.text);
      counts.failed += 1;
      return false;
    }
    writeStamp(exe, key, []);
    return true;
  });
  for (const isa of room.isas) {
    const label = `${room.name} (${isa === 'all' ? 'every ISA' : `SLIMTENSOR_ISA=${isa}`})`;
    job(`run ${label}`, [link], room.runSeconds ?? 3, async () => {
      const started = Date.now();
      const env = { ...process.env, ...RUN_ENV, SLIMTENSOR_ISA: isa };
      if (isa === 'all') delete env.SLIMTENSOR_ISA;
      const r = await exec(exe, room.args ?? [], env);
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      // The closing line of check.h's finish().
      const m = /^(.*): (\d+) passed, (\d+) failed, (\d+) skipped$/m.exec(r.text.split('\n').filter((l) => / passed, /.test(l)).pop() ?? '');
      if (m) {
        counts.passed += Number(m[2]);
        counts.failed += Number(m[3]);
        counts.skipped += Number(m[4]);
      }
      const ok = r.code === 0 && m !== null && m[3] === '0';
      if (!ok && (!m || m[3] === '0')) counts.failed += 1; // a crash or a sanitizer report: no closing line, or a clean one and a bad exit
      report(`${label}: ${ok ? 'passed' : `FAILED (exit ${r.code})`} in ${seconds} s`, r.text);
      return ok;
    });
  }
}

// Longest chain first: a job's rank is its cost plus the largest rank among
// the jobs that wait for it.
function rank(key, memo = new Map()) {
  if (!memo.has(key)) {
    let below = 0;
    for (const j of jobs.values()) if (j.deps.includes(key)) below = Math.max(below, rank(j.key, memo));
    memo.set(key, jobs.get(key).cost + below);
  }
  return memo.get(key);
}

function runGraph() {
  const memo = new Map();
  const pending = new Map([...jobs.values()].map((j) => [j.key, new Set(j.deps)]));
  const ready = [];
  let running = 0;
  let ok = true;
  const took = {};
  return new Promise((resolve) => {
    const release = (key, done) => {
      for (const [k, waits] of pending) {
        if (!waits.has(key)) continue;
        if (!done) {
          pending.delete(k); // its inputs failed: it never runs
          release(k, false);
        } else if (waits.delete(key) && waits.size === 0) {
          pending.delete(k);
          ready.push(k);
        }
      }
    };
    const pump = () => {
      ready.sort((a, b) => rank(b, memo) - rank(a, memo));
      while (running < parallel && ready.length) {
        const key = ready.shift();
        const started = Date.now();
        running += 1;
        jobs
          .get(key)
          .work()
          .catch((e) => {
            report(`${key} FAILED`, String(e && e.stack ? e.stack : e));
            counts.failed += 1;
            return false;
          })
          .then((done) => {
            running -= 1;
            // A cached step takes no time; keep what it cost when it ran.
            const seconds = (Date.now() - started) / 1000;
            took[key] = seconds < 0.2 && times[key] ? times[key] : seconds;
            if (!done) ok = false;
            release(key, done);
            pump();
          });
      }
      if (running === 0 && ready.length === 0) resolve({ ok: ok && pending.size === 0, took });
    };
    for (const [k, waits] of pending) {
      if (waits.size === 0) {
        pending.delete(k);
        ready.push(k);
      }
    }
    pump();
  });
}

fs.mkdirSync(path.join(out, 'obj'), { recursive: true });
const started = Date.now();
runGraph().then(({ ok, took }) => {
  fs.writeFileSync(timesFile, JSON.stringify({ ...times, ...took }, null, 1));
  writeSummary();
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const cache = compiled === 0 ? 'all objects cached' : `${compiled} of ${objects.size} objects compiled`;
  console.log(`\nnative tests: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped (${rooms.length} rooms; ${cache}; ${seconds} s on ${parallel} jobs)`);
  process.exit(ok && counts.failed === 0 ? 0 : 1);
});

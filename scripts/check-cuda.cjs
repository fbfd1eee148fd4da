#!/usr/bin/env node
// The CUDA compile check `npm test` runs: wherever nvcc exists, build the
// CUDA variant of the addon with cmake-js into build-cuda/ (never build/,
// which holds the CPU addon the tests load) and check that the result loads
// and has CUDA compiled in. test/cuda.test.ts then loads it from there.
// Without nvcc it says so and succeeds. build-cuda/ is kept between runs, so
// a run with no source changes only re-checks (about a second).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const out = path.join(root, 'build-cuda');
const addon = path.join(out, 'Release', 'slimtensor.node');

function fail(message) {
  process.stderr.write(`\nCUDA compile check FAILED: ${message}\n`);
  process.exit(1);
}

function onPath(name) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return null;
}

function findNvcc() {
  if (process.env.CUDACXX && fs.existsSync(process.env.CUDACXX)) return process.env.CUDACXX;
  const exe = process.platform === 'win32' ? 'nvcc.exe' : 'nvcc';
  const found = onPath(exe);
  if (found) return found;
  const fallback = path.join('/usr/local/cuda/bin', exe);
  return fs.existsSync(fallback) ? fallback : null;
}

const nvcc = findNvcc();
if (!nvcc) {
  process.stdout.write('CUDA compile check skipped: nvcc not found (not on PATH, no CUDACXX, no /usr/local/cuda/bin/nvcc); the CPU-only addon is unaffected\n');
  process.exit(0);
}
if (!onPath(process.platform === 'win32' ? 'cmake.exe' : 'cmake')) {
  fail(`nvcc exists (${nvcc}) but cmake is not on PATH; install CMake (>= 3.18) to compile the CUDA sources`);
}

let cmakeJs;
try {
  cmakeJs = path.join(path.dirname(require.resolve('cmake-js/package.json', { paths: [root] })), 'bin', 'cmake-js');
} catch {
  fail('cmake-js is not installed (it is a devDependency: run npm install)');
}

// A cache configured before nvcc was installed (or with another one) would
// keep building the CPU-only addon: configure afresh in that case.
const cache = path.join(out, 'CMakeCache.txt');
let command = 'build';
if (fs.existsSync(cache)) {
  const m = /^CMAKE_CUDA_COMPILER:[A-Z]+=(.*)$/m.exec(fs.readFileSync(cache, 'utf8'));
  if (!m || !m[1] || m[1].endsWith('NOTFOUND') || !fs.existsSync(m[1])) command = 'rebuild';
}

const started = Date.now();
process.stdout.write(`CUDA compile check: nvcc ${nvcc}; cmake-js ${command} --out build-cuda\n`);
const env = { ...process.env, CUDACXX: nvcc };
const parallel = String(typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length);
const r = spawnSync(process.execPath, [cmakeJs, command, '--out', out, '--parallel', parallel], { stdio: 'inherit', cwd: root, env });
if (r.error) fail(`could not run cmake-js: ${r.error.message}`);
if (r.status !== 0) fail(`cmake-js ${command} exited with ${r.status === null ? `signal ${r.signal}` : `status ${r.status}`} (see the compiler output above)`);
if (!fs.existsSync(addon)) fail(`the build succeeded but ${path.relative(root, addon)} is missing`);

// Load it in a fresh process: it must load without a GPU or driver and say
// that CUDA is compiled in.
const probe = spawnSync(
  process.execPath,
  ['-e', `process.stdout.write(JSON.stringify(require(${JSON.stringify(addon)}).backends().cuda))`],
  { cwd: root, encoding: 'utf8' },
);
if (probe.status !== 0) fail(`${path.relative(root, addon)} does not load:\n${probe.stderr}`);
let cuda;
try {
  cuda = JSON.parse(probe.stdout);
} catch {
  fail(`unexpected output from the load check: ${probe.stdout}`);
}
if (cuda.compiled !== true) fail(`${path.relative(root, addon)} was built without CUDA kernels although nvcc exists (see the cmake output above)`);
const seconds = ((Date.now() - started) / 1000).toFixed(1);
const device = cuda.available ? 'a CUDA device is available' : `no usable device (${cuda.reason})`;
process.stdout.write(`CUDA compile check passed in ${seconds}s: ${path.relative(root, addon)} has CUDA kernels; ${device}\n`);

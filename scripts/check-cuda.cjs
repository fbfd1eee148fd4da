#!/usr/bin/env node
// The CUDA compile check `npm test` runs: wherever nvcc exists, build the
// CUDA variant of the addon with cmake-js into build-cuda/ (never build/,
// which holds the CPU addon the tests load) and check that the result loads
// and has CUDA compiled in. test/cuda.test.ts then loads it from there.
// Without nvcc it says so and succeeds.
//
// Cheaper than `npm run build:cuda`, which it otherwise equals: one GPU
// architecture (SLIMTENSOR_CUDA_ARCHITECTURES=75: sm_75 code and compute_75
// PTX, which every GPU CUDA 13 supports can run; $SLIMTENSOR_CUDA_CHECK_ARCHS
// overrides it) instead of five, and the C++ at -O0 (SLIMTENSOR_CXX_OPT; see
// CMakeLists.txt). build-cuda/ is kept between runs, so a run with no source
// changes only re-checks (about a second).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { findNvcc, onPath, touch } = require('./builds.cjs');

const root = path.join(__dirname, '..');
const out = path.join(root, 'build-cuda');
const addon = path.join(out, 'Release', 'slimtensor.node');
// The cache variables of the check's build (CMakeLists.txt).
const cacheVars = {
  SLIMTENSOR_CUDA_ARCHITECTURES: process.env.SLIMTENSOR_CUDA_CHECK_ARCHS || '75',
  SLIMTENSOR_CXX_OPT: '-O0',
};

function fail(message) {
  process.stderr.write(`\nCUDA compile check FAILED: ${message}\n`);
  process.exit(1);
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
// keep building the CPU-only addon: build afresh in that case. A cache with
// other values of the check's variables is configured again (cmake-js build
// alone would keep them); unchanged objects are reused.
const cache = path.join(out, 'CMakeCache.txt');
const steps = [];
if (fs.existsSync(cache)) {
  const text = fs.readFileSync(cache, 'utf8');
  const cached = (name) => new RegExp(`^${name}:[A-Z]+=(.*)$`, 'm').exec(text)?.[1];
  const compiler = cached('CMAKE_CUDA_COMPILER');
  if (!compiler || compiler.endsWith('NOTFOUND') || !fs.existsSync(compiler)) steps.push('rebuild');
  else if (Object.entries(cacheVars).some(([k, v]) => cached(k) !== v)) steps.push('configure', 'build');
  else steps.push('build');
} else {
  steps.push('build');
}

const started = Date.now();
const env = { ...process.env, CUDACXX: nvcc };
const parallel = String(Number(process.env.SLIMTENSOR_TEST_JOBS) || (typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length));
const defines = Object.entries(cacheVars).map(([k, v]) => `--CD${k}=${v}`);
for (const command of steps) {
  process.stdout.write(`CUDA compile check: nvcc ${nvcc}; cmake-js ${command} --out build-cuda ${defines.join(' ')}\n`);
  const r = spawnSync(process.execPath, [cmakeJs, command, '--out', out, '--parallel', parallel, ...defines], { stdio: 'inherit', cwd: root, env });
  if (r.error) fail(`could not run cmake-js: ${r.error.message}`);
  if (r.status !== 0) fail(`cmake-js ${command} exited with ${r.status === null ? `signal ${r.signal}` : `status ${r.status}`} (see the compiler output above)`);
}
if (!fs.existsSync(addon)) fail(`the build succeeded but ${path.relative(root, addon)} is missing`);
// Current now, even when nothing needed relinking (tests compare its time
// with the sources': test/support/cuda-build.ts).
touch(addon);

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

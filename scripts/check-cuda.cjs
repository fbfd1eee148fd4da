#!/usr/bin/env node
// The CUDA compile check `npm test` runs: wherever nvcc exists, build the
// CUDA variant of the addon with cmake-js into build-cuda/ (never build/,
// which holds the CPU addon the tests load) and check that the result loads
// and has CUDA compiled in. test/cuda.test.ts then loads it from there.
// Without nvcc it says so and succeeds.
//
// Cheaper than `npm run build:cuda`, which it otherwise equals: PTX for one
// virtual architecture (SLIMTENSOR_CUDA_ARCHITECTURES=75-virtual: compute_75
// PTX, which every GPU CUDA 13 supports compiles at load time) instead of
// machine code for five, so ptxas never runs (it was 60 % of nvcc's time
// on quant.cu: 31 s of CPU against 13 s PTX-only); every .cu file still goes
// through the front end and cicc, which is where source errors show.
// $SLIMTENSOR_CUDA_CHECK_ARCHS overrides it (e.g. 75 to run ptxas too). The
// CPU C++ comes from the CPU addon's build (below). build-cuda/ is kept
// between runs, so a run with no source changes only re-checks (about a
// second).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { addon: addonCpu, findNvcc, nativeInputs, onPath, staleness, touch } = require('./builds.cjs');

const root = path.join(__dirname, '..');
const out = path.join(root, 'build-cuda');
const addon = path.join(out, 'Release', 'slimtensor.node');
// node-gyp's objects of the CPU addon, when it is current with the sources
// (npm test rebuilds it first): the check links them instead of compiling
// the same C++ again (SLIMTENSOR_CPU_OBJECTS in CMakeLists.txt), which was
// two thirds of its CPU time; it compiles the .cu files and the CUDA-only
// C++ (device.cc, *_device.cc, cusolver_loader.cc). Otherwise it compiles
// everything, the C++ at -O0.
const cpuObjects = path.join(root, 'build', 'Release', 'obj.target');
const reuse = fs.existsSync(cpuObjects) && staleness(addonCpu, nativeInputs('binding.gyp')) === null;
// The cache variables of the check's build (CMakeLists.txt).
const cacheVars = {
  SLIMTENSOR_CUDA_ARCHITECTURES: process.env.SLIMTENSOR_CUDA_CHECK_ARCHS || '75-virtual',
  SLIMTENSOR_CXX_OPT: '-O0',
  SLIMTENSOR_CPU_OBJECTS: reuse ? cpuObjects : '',
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

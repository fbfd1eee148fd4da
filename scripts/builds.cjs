// What the builds read, whether a build on disk predates it, and where nvcc
// is. Shared by scripts/test.cjs (rebuilds build/ before testing),
// scripts/native-test.cjs, scripts/check-cuda.cjs, and the tests that load
// build-cuda/ or run dist/ (test/support/cuda-build.ts, test/support/cli.ts).
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');

/** Every file under each of `inputs` (paths relative to the repository; files or folders). */
function filesOf(inputs) {
  const files = [];
  const walk = (p) => {
    const st = fs.statSync(p);
    if (!st.isDirectory()) return files.push(p);
    for (const e of fs.readdirSync(p)) walk(path.join(p, e));
  };
  for (const i of inputs) walk(path.join(root, i));
  return files;
}

/** What a build of the addon reads: native/ and its build file (binding.gyp or CMakeLists.txt). */
const nativeInputs = (buildFile) => ['native', buildFile];

/**
 * Why the build output `output` is out of date with `inputs` (files or
 * folders, relative to the repository), or null when it is current.
 * Modification times: a checkout or an edit makes a file newer than the
 * build.
 */
function staleness(output, inputs) {
  const rel = (p) => path.relative(process.cwd(), p) || p;
  let built;
  try {
    built = fs.statSync(output).mtimeMs;
  } catch {
    return `${rel(output)} does not exist`;
  }
  let newest = null;
  for (const f of filesOf(inputs)) {
    const m = fs.statSync(f).mtimeMs;
    if (m > built && (!newest || m > newest.m)) newest = { f, m };
  }
  return newest ? `${rel(newest.f)} is newer than ${rel(output)}` : null;
}

/** Marks `output` as built now (a build that had nothing to redo leaves its time alone). */
function touch(output) {
  const now = new Date();
  fs.utimesSync(output, now, now);
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

/** nvcc: $CUDACXX, else on PATH, else /usr/local/cuda/bin; null when there is none. */
function findNvcc() {
  if (process.env.CUDACXX && fs.existsSync(process.env.CUDACXX)) return process.env.CUDACXX;
  const exe = process.platform === 'win32' ? 'nvcc.exe' : 'nvcc';
  const found = onPath(exe);
  if (found) return found;
  const fallback = path.join('/usr/local/cuda/bin', exe);
  return fs.existsSync(fallback) ? fallback : null;
}

const addon = path.join(root, 'build', 'Release', 'slimtensor.node');

/**
 * Rebuilds build/Release/slimtensor.node with node-gyp when a native source,
 * header or binding.gyp is newer (configuring again when binding.gyp is),
 * so a test run after a native edit never tests the old binary. Returns
 * what it did, or null when the addon was current; throws when the build
 * fails. `jobs`: make's parallelism.
 */
function rebuildStaleAddon(jobs) {
  const why = staleness(addon, nativeInputs('binding.gyp'));
  if (!why) return null;
  const { spawnSync } = require('node:child_process');
  const nodeGyp = path.join(path.dirname(require.resolve('node-gyp/package.json', { paths: [root] })), 'bin', 'node-gyp.js');
  const run = (args) => {
    process.stdout.write(`build the addon (${why}): node-gyp ${args.join(' ')}\n`);
    const r = spawnSync(process.execPath, [nodeGyp, ...args], { cwd: root, stdio: 'inherit' });
    return r.status === 0;
  };
  const makefile = path.join(root, 'build', 'Makefile');
  const configured = fs.existsSync(makefile) && fs.statSync(path.join(root, 'binding.gyp')).mtimeMs <= fs.statSync(makefile).mtimeMs;
  const build = ['build', '-j', String(jobs)];
  // A Makefile from another checkout (a copied build/) fails at once:
  // configure here and build again.
  if (!(configured && run(build)) && !(run(['configure']) && run(build))) throw new Error('node-gyp failed (see its output above)');
  touch(addon);
  return why;
}

module.exports = { root, addon, staleness, nativeInputs, touch, onPath, findNvcc, rebuildStaleAddon };

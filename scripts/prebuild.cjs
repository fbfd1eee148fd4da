#!/usr/bin/env node
// `npm pack` / `npm publish` (the prepack script), and each job of
// .github/workflows/prebuilds.yml: puts this platform's addon into
// prebuilds/<platform>-<arch>/ under the name prebuildify gives it
// (`--napi`, plus `--tag-libc` on Linux: slimtensor.glibc.node), where
// node-gyp-build finds it at install and load time, so that installing the
// package compiles nothing where a prebuild fits.
//
// The prebuild is the CPU addon node-gyp builds (SIMD kernels chosen at
// run time from cpuid, as always; N-API, so one file serves every Node
// version that has N-API 8), never a cmake-js build with CUDA.
//
// Reuse, and why it cannot be stale: when build/ holds a node-gyp build, it
// is first brought up to date as npm test does (scripts/builds.cjs: rebuilt
// when a file under native/ or binding.gyp is newer than the addon,
// configured again when binding.gyp is; nothing is run when nothing is), and
// the result is copied. Without a usable build/ (none, or one node-gyp
// cannot build even after configuring), prebuildify builds from scratch
// (node-gyp rebuild); a cmake-js build/ (CUDA) is refused. Either way the binary is loaded before it is kept: it
// must report no CUDA kernels.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { rebuildStaleAddon } = require('./builds.cjs');

const root = path.join(__dirname, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const build = path.join(root, 'build');
const built = path.join(build, 'Release', `${pkg.name}.node`);
const platform = os.platform();
const libc = platform === 'linux' ? (fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc') : undefined;
const dir = path.join(root, 'prebuilds', `${platform}-${os.arch()}`);
// prebuildify's name for --napi [--tag-libc]
const file = path.join(dir, [pkg.name, ...(libc ? [libc] : [])].join('.') + '.node');
const binOf = (name, rel) => path.join(path.dirname(require.resolve(`${name}/package.json`, { paths: [root] })), rel);

function log(msg) {
  process.stdout.write(`prebuild: ${msg}\n`);
}

function fail(msg) {
  process.stderr.write(`prebuild: ${msg}\n`);
  process.exit(1);
}

/**
 * The environment for node-gyp: all cores, and the headers of the Node
 * that runs this when they are installed next to it (a distribution's
 * package) and no nodedir is configured, so nothing is downloaded.
 */
function gypEnv() {
  const env = { ...process.env, JOBS: process.env.JOBS || 'max' };
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (!env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix;
  return env;
}

/** Brings a node-gyp build/ up to date; false when there is none usable. */
function updateBuild() {
  if (!fs.existsSync(built) || !fs.existsSync(path.join(build, 'config.gypi'))) return false;
  if (fs.existsSync(path.join(build, 'CMakeCache.txt'))) {
    fail('build/ holds a cmake-js build (npm run build:cuda); a prebuild is the CPU addon: run `npm run build` (node-gyp) or remove build/ first');
  }
  try {
    const why = rebuildStaleAddon(os.availableParallelism ? os.availableParallelism() : os.cpus().length);
    log(why ? `rebuilt build/ (${why})` : 'build/ is current with native/ and binding.gyp: reused as it is');
    return true;
  } catch {
    log('node-gyp build failed (build/ configured elsewhere?): building from scratch');
    return false;
  }
}

function buildFromScratch() {
  log(`prebuildify --napi${libc ? ' --tag-libc' : ''} --strip --target ${process.version}`);
  const args = [binOf('prebuildify', 'bin.js'), '--napi', '--strip', '--target', process.version];
  if (libc) args.push('--tag-libc');
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit', env: gypEnv() });
  if (r.status !== 0) fail('prebuildify failed');
  if (!fs.existsSync(file)) fail(`prebuildify did not write ${path.relative(root, file)}`);
}

/** Copies the up-to-date build, stripped of symbols where `strip` exists (as prebuildify --strip). */
function copyBuild() {
  fs.mkdirSync(dir, { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  fs.copyFileSync(built, tmp);
  if (platform === 'linux' || platform === 'darwin') {
    const r = spawnSync('strip', platform === 'darwin' ? [tmp, '-Sx'] : [tmp, '--strip-all'], { stdio: 'ignore' });
    if (r.error === undefined && r.status !== 0) fail(`strip failed on ${tmp}`);
  }
  fs.renameSync(tmp, file);
}

/** Loads the prebuild in a child: it must be a working N-API addon without CUDA. */
function check() {
  const code = `const b = require(${JSON.stringify(file)}); const k = b.backends(); process.stdout.write(JSON.stringify({ cuda: k.cuda.compiled, kernel: k.cpu.kernel }));`;
  const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8' });
  if (r.status !== 0) fail(`${path.relative(root, file)} does not load:\n${r.stderr}`);
  const info = JSON.parse(r.stdout);
  if (info.cuda) {
    fs.rmSync(file, { force: true });
    fail('the addon has CUDA kernels compiled in; a prebuild is the CPU addon (npm run build, not build:cuda)');
  }
  log(`${path.relative(root, file)} (${fs.statSync(file).size} bytes, CPU kernels chosen at run time; here: ${info.kernel})`);
  const needs = symbolVersions();
  if (needs) log(`it needs ${needs} or newer (the build system's); older systems compile instead`);
}

/**
 * Linux: the newest glibc and libstdc++ symbol versions the prebuild needs
 * (those of the system it was built on), for the log: older systems cannot
 * load it and fall back to compiling. Undefined where objdump is missing.
 */
function symbolVersions() {
  if (platform !== 'linux') return undefined;
  const r = spawnSync('objdump', ['-T', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error !== undefined || r.status !== 0) return undefined;
  const newest = (lib) => {
    const versions = [...r.stdout.matchAll(new RegExp(`\\(${lib}_([0-9.]+)\\)`, 'g'))].map((m) => m[1]);
    versions.sort((x, y) => x.localeCompare(y, 'en', { numeric: true }));
    return versions.length ? `${lib}_${versions[versions.length - 1]}` : undefined;
  };
  return [newest('GLIBC'), newest('GLIBCXX')].filter(Boolean).join(', ');
}

if (updateBuild()) copyBuild();
else buildFromScratch();
check();

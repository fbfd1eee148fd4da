#!/usr/bin/env node
// `npm test`: rebuild the addon when a native file is newer than it; then
// start the native tests (C++ cores under ASan/UBSan) and the CUDA compile
// check, rebuild dist/ when lib/ is newer, and run the type-check and mocha
// next to the two C++ steps (a type error stops everything). mocha's tests
// that load build-cuda/ wait for the CUDA check (waitForCudaCheck in
// test/support/cuda-build.ts) and their files run last. Arguments go to
// mocha (in place of the ordered list of files).
//
// Writes .tmp/test-summary.json — mocha's tests plus the native checks:
// { passed, failed, skipped, failedSteps } — from which .ci/run prints the
// closing "N passed, N failed, N skipped"; a failed step counts as a
// failure and is named.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { rebuildStaleAddon, staleness } = require('./builds.cjs');

const root = path.join(__dirname, '..');
const tmp = path.join(root, '.tmp');
const bin = (pkg, rel) => path.join(path.dirname(require.resolve(`${pkg}/package.json`, { paths: [root] })), rel);
const node = process.execPath;
const jobs = Number(process.env.SLIMTENSOR_TEST_JOBS) || (os.availableParallelism ? os.availableParallelism() : os.cpus().length);
const started = Date.now();
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

const summaries = {
  native: path.join(tmp, 'native-summary.json'),
  mocha: path.join(tmp, 'mocha-summary.json'),
  total: path.join(tmp, 'test-summary.json'),
};
fs.mkdirSync(tmp, { recursive: true });
for (const f of Object.values(summaries)) fs.rmSync(f, { force: true });

const timings = [];
const failedSteps = [];

function readCounts(file) {
  try {
    const s = JSON.parse(fs.readFileSync(file, 'utf8'));
    return { passed: s.passed | 0, failed: s.failed | 0, skipped: s.skipped | 0 };
  } catch {
    return null;
  }
}

/** Writes the combined summary and exits: status 1 when anything failed. */
function finish(notRun = []) {
  const total = { passed: 0, failed: 0, skipped: 0 };
  for (const file of [summaries.native, summaries.mocha]) {
    const c = readCounts(file);
    if (c) for (const k of Object.keys(total)) total[k] += c[k];
  }
  for (const step of failedSteps) if (!step.counted) total.failed += 1;
  const names = failedSteps.map((s) => s.title);
  fs.writeFileSync(summaries.total, JSON.stringify({ ...total, failedSteps: names }) + '\n');
  process.stdout.write(`\nnpm test steps: ${timings.join('; ')}; total ${seconds(Date.now() - started)}\n`);
  if (names.length) process.stdout.write(`failed step${names.length > 1 ? 's' : ''}: ${names.join('; ')}${notRun.length ? ` (not run or stopped: ${notRun.join(', ')})` : ''}\n`);
  process.stdout.write(`npm test: ${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped\n`);
  process.exit(names.length || total.failed ? 1 : 0);
}

/** A step in the foreground; stops the run when it fails. */
function step(title, run, later) {
  process.stdout.write(`\n> ${title}\n`);
  const t0 = Date.now();
  let ok;
  try {
    ok = run();
  } catch (e) {
    process.stdout.write(`${e.message}\n`);
    ok = false;
  }
  timings.push(`${title.split(' (')[0]} ${seconds(Date.now() - t0)}`);
  if (!ok) {
    failedSteps.push({ title, counted: false });
    finish(later);
  }
}


const running = new Set();
function stopGroup(child) {
  try {
    if (process.platform === 'win32') child.kill('SIGTERM');
    else process.kill(-child.pid, 'SIGTERM');
  } catch {
    // already gone
  }
}
// Ctrl-C or a kill of npm test stops every step it started.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const child of running) stopGroup(child);
    process.exit(130);
  });
}

/** A step in the background, its output held until `show` is called. */
function background(title, cmd, args, { live = false, quiet = false, summary = null, env = process.env } = {}) {
  const t0 = Date.now();
  let text = '';
  // Its own process group, so that stopping it stops what it started (g++,
  // cmake, the process mocha's bin starts with tsx).
  const child = spawn(cmd, args, { cwd: root, env, detached: process.platform !== 'win32', stdio: live ? 'inherit' : ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  if (live && !quiet) process.stdout.write(`\n> ${title}\n`);
  else for (const s of [child.stdout, child.stderr]) s.on('data', (d) => (text += d));
  const done = new Promise((resolve) => {
    child.on('close', (code, signal) => {
      running.delete(child);
      timings.push(`${title.split(' (')[0]} ${seconds(Date.now() - t0)} (from ${seconds(t0 - started)})`);
      const ok = code === 0;
      // A step whose summary file has its failures counts them itself; a
      // step stopped because another failed is named as not finished.
      if (!ok && !killed) failedSteps.push({ title, counted: summary !== null && (readCounts(summary)?.failed ?? 0) > 0 });
      resolve({ ok, code: code ?? signal });
    });
  });
  let killed = false;
  const kill = () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    killed = true;
    stopGroup(child);
  };
  return { done, kill, show: () => !live && process.stdout.write(`\n> ${title}\n${text}`) };
}

step('build the addon when a native file is newer (node-gyp)', () => {
  const why = rebuildStaleAddon(jobs);
  if (!why) process.stdout.write('build/Release/slimtensor.node is current\n');
  return true;
}, ['type-check', 'build dist/', 'native tests', 'CUDA compile check', 'mocha']);

// mocha's files in order: those whose tests wait for the CUDA check
// (test/support/cuda-build.ts: waitForCudaCheck) last, the file whose first
// wait comes latest in its text first among them (its other tests run
// before the wait), so mocha starts at once and reaches the waits as late
// as it can. The config's spec still lists every file (mocha concatenates
// it; a file listed twice loads once).
function mochaFiles() {
  const dir = path.join(root, 'test');
  const files = fs.readdirSync(dir, { recursive: true }).filter((f) => f.endsWith('.test.ts')).map((f) => path.join('test', f)).sort();
  const waitAt = new Map();
  for (const f of files) {
    const text = fs.readFileSync(path.join(root, f), 'utf8');
    const at = text.indexOf('waitForCudaCheck()');
    if (at >= 0) waitAt.set(f, at / text.length);
  }
  const waiting = files.filter((f) => waitAt.has(f)).sort((a, b) => waitAt.get(b) - waitAt.get(a));
  return [...files.filter((f) => !waitAt.has(f)), ...waiting];
}

(async () => {
  const cudaDone = path.join(tmp, 'cuda-check-done');
  fs.rmSync(cudaDone, { force: true });
  // The C++ steps need neither TypeScript step: they start first.
  const native = background('native tests (C++ cores under ASan/UBSan)', node, [path.join(__dirname, 'native-test.cjs')], { summary: summaries.native });
  const cuda = background('CUDA compile check (when nvcc exists)', node, [path.join(__dirname, 'check-cuda.cjs')]);
  cuda.done.then(({ ok }) => fs.writeFileSync(cudaDone, ok ? 'passed\n' : 'failed\n'));
  const stop = async (notRun) => {
    for (const b of [native, cuda]) b.kill();
    await Promise.all([native.done, cuda.done]);
    finish(notRun);
  };
  // dist/ (the CLI tests run dist/cli/main.js) is rebuilt when lib/ or the
  // config is newer; npm install's prepare step has just built it.
  const distWhy = staleness(path.join(root, 'dist', 'index.js'), ['lib', 'tsconfig.json']);
  if (distWhy) {
    process.stdout.write(`\n> build dist/ (${distWhy})\n`);
    const dist = await background('build dist/', node, [path.join(__dirname, 'build-ts.cjs')], { live: true, quiet: true }).done;
    if (!dist.ok) return stop(['type-check', 'mocha', 'native tests', 'CUDA compile check']);
  } else process.stdout.write('\n> build dist/: dist/index.js is current with lib/\n');
  // The type-check runs next to mocha (its output is held: mocha prints as
  // it runs); a type error stops everything.
  const typeCheck = background('type-check (tsc --noEmit)', node, [bin('typescript', 'bin/tsc'), '-p', 'tsconfig.check.json']);
  const args = process.argv.slice(2);
  const mocha = background('mocha', node, [bin('mocha', 'bin/mocha.js'), ...(args.length ? args : mochaFiles())], {
    live: true,
    summary: summaries.mocha,
    env: { ...process.env, SLIMTENSOR_CUDA_CHECK_DONE: cudaDone },
  });
  const check = await typeCheck.done;
  if (!check.ok) {
    typeCheck.show();
    mocha.kill();
    await mocha.done;
    return stop(['mocha', 'native tests', 'CUDA compile check']);
  }
  await mocha.done;
  await cuda.done;
  cuda.show();
  await native.done;
  native.show();
  finish();
})();

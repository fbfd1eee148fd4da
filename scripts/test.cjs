#!/usr/bin/env node
// `npm test`: type-check, rebuild dist/, rebuild the addon when a native
// file is newer than it, then the native tests (C++ cores under ASan/UBSan)
// and the CUDA compile check side by side, and mocha once the CUDA check is
// done (its tests load build-cuda/), alongside whatever the native tests
// still run. Arguments go to mocha.
//
// Writes .tmp/test-summary.json — mocha's tests plus the native checks:
// { passed, failed, skipped, failedSteps } — from which .ci/run prints the
// closing "N passed, N failed, N skipped"; a failed step counts as a
// failure and is named.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { rebuildStaleAddon } = require('./builds.cjs');

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
  if (names.length) process.stdout.write(`failed step${names.length > 1 ? 's' : ''}: ${names.join('; ')}${notRun.length ? ` (not run: ${notRun.join(', ')})` : ''}\n`);
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

const sync = (cmd, args) => spawnSync(cmd, args, { stdio: 'inherit', cwd: root }).status === 0;

/** A step in the background, its output held until `show` is called. */
function background(title, cmd, args, { live = false, summary = null } = {}) {
  const t0 = Date.now();
  let text = '';
  const child = spawn(cmd, args, { cwd: root, stdio: live ? 'inherit' : ['ignore', 'pipe', 'pipe'] });
  if (live) process.stdout.write(`\n> ${title}\n`);
  else for (const s of [child.stdout, child.stderr]) s.on('data', (d) => (text += d));
  const done = new Promise((resolve) => {
    child.on('close', (code, signal) => {
      timings.push(`${title.split(' (')[0]} ${seconds(Date.now() - t0)} (from ${seconds(t0 - started)})`);
      const ok = code === 0;
      // A step whose summary file has its failures counts them itself.
      if (!ok) failedSteps.push({ title, counted: summary !== null && (readCounts(summary)?.failed ?? 0) > 0 });
      resolve({ ok, code: code ?? signal });
    });
  });
  return { done, show: () => !live && process.stdout.write(`\n> ${title}\n${text}`) };
}

const later = ['native tests', 'CUDA compile check', 'mocha'];
step('type-check (tsc --noEmit)', () => sync(node, [bin('typescript', 'bin/tsc'), '-p', 'tsconfig.check.json']), later);
step('build dist/', () => sync(node, [path.join(__dirname, 'build-ts.cjs')]), later);
step('build the addon when a native file is newer (node-gyp)', () => {
  const why = rebuildStaleAddon(jobs);
  if (!why) process.stdout.write('build/Release/slimtensor.node is current\n');
  return true;
}, later);

(async () => {
  const native = background('native tests (C++ cores under ASan/UBSan)', node, [path.join(__dirname, 'native-test.cjs')], { summary: summaries.native });
  const cuda = background('CUDA compile check (when nvcc exists)', node, [path.join(__dirname, 'check-cuda.cjs')]);
  let mochaRunning = false;
  let nativeShown = false;
  const showNative = () => {
    if (!nativeShown) native.show();
    nativeShown = true;
  };
  native.done.then(() => {
    if (!mochaRunning) showNative();
  });
  const c = await cuda.done;
  cuda.show();
  if (!c.ok) {
    await native.done;
    showNative();
    finish(['mocha']);
  }
  mochaRunning = true;
  // The native tests' output waits for mocha's if they are still running.
  const mocha = background('mocha', node, [bin('mocha', 'bin/mocha.js'), ...process.argv.slice(2)], { live: true, summary: summaries.mocha });
  await mocha.done;
  await native.done;
  showNative();
  finish();
})();

#!/usr/bin/env node
// `npm test`: type-check, rebuild dist/, build the native addon if it is
// missing, compile the CUDA sources when nvcc exists, then run mocha.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const bin = (pkg, rel) => path.join(path.dirname(require.resolve(`${pkg}/package.json`, { paths: [root] })), rel);

function step(title, cmd, args, opts = {}) {
  process.stdout.write(`\n> ${title}\n`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, ...opts });
  if (r.status !== 0) {
    process.stdout.write(`\n${title} failed\n`);
    process.exit(r.status || 1);
  }
}

const node = process.execPath;
step('type-check (tsc --noEmit)', node, [bin('typescript', 'bin/tsc'), '-p', 'tsconfig.check.json']);
step('build dist/', node, [path.join(__dirname, 'build-ts.cjs')]);
if (!fs.existsSync(path.join(root, 'build', 'Release', 'slimtensor.node'))) {
  step('build the addon (node-gyp)', node, [bin('node-gyp', 'bin/node-gyp.js'), 'rebuild']);
}
step('native tests (C++ core under ASan/UBSan)', node, [path.join(__dirname, 'native-test.cjs')]);
step('CUDA sources compile (when nvcc exists)', node, [path.join(__dirname, 'check-cuda.cjs')]);
step('mocha', node, [bin('mocha', 'bin/mocha.js'), ...process.argv.slice(2)]);

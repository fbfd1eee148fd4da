// mocha's spec output, then one machine-readable line: "N passed, N failed,
// N skipped" (also written to .tmp/test-summary.json for .ci/run).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const Mocha = require('mocha');

const { EVENT_RUN_END } = Mocha.Runner.constants;

class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once(EVENT_RUN_END, () => {
      const s = runner.stats || {};
      const summary = { passed: s.passes || 0, failed: s.failures || 0, skipped: s.pending || 0 };
      const dir = path.join(__dirname, '..', '..', '.tmp');
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, 'test-summary.json'), JSON.stringify(summary) + '\n');
      process.stdout.write(`\n${summary.passed} passed, ${summary.failed} failed, ${summary.skipped} skipped\n`);
    });
  }
}

module.exports = SummaryReporter;

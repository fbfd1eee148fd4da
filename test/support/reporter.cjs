// mocha's spec output, the skipped tests with their reasons (skip() in
// test/support/skip.ts puts the reason in the title), then one line
// "mocha: N passed, N failed, N skipped", also written to
// .tmp/mocha-summary.json: scripts/test.cjs adds the native checks' counts
// for npm test's closing line.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const Mocha = require('mocha');

const { EVENT_RUN_END, EVENT_TEST_PENDING } = Mocha.Runner.constants;

class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    const skipped = [];
    runner.on(EVENT_TEST_PENDING, (test) => skipped.push(test.fullTitle()));
    runner.once(EVENT_RUN_END, () => {
      const s = runner.stats || {};
      const summary = { passed: s.passes || 0, failed: s.failures || 0, skipped: s.pending || 0 };
      const dir = path.join(__dirname, '..', '..', '.tmp');
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, 'mocha-summary.json'), JSON.stringify(summary) + '\n');
      if (skipped.length) process.stdout.write(`\nskipped:\n${skipped.map((t) => `  - ${t}`).join('\n')}\n`);
      process.stdout.write(`\nmocha: ${summary.passed} passed, ${summary.failed} failed, ${summary.skipped} skipped\n`);
    });
  }
}

module.exports = SummaryReporter;

// examples/distill.ts, run as a user runs it (at a small size): the student
// trained with distillLoss must come to agree with the teacher's top-1
// class far more often than at the start.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';

const root = path.join(__dirname, '..');

// Held-out top-1 agreement after 10 epochs on 2048 inputs; the run reaches
// ~72% (a linear student cannot follow the teacher's tanh layer
// everywhere), from ~4% (chance is 1/24) before training.
const AFTER_AT_LEAST = 0.6;
const BEFORE_AT_MOST = 0.2;

describe('examples/distill.ts', () => {
  it(`trains a linear student to agree with a 2-layer teacher: top-1 agreement rises to >= ${AFTER_AT_LEAST * 100}%`, async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', path.join('examples', 'distill.ts'), '--samples', '2048', '--epochs', '10'],
      { cwd: root },
    );
    const m = /top-1 agreement with the teacher on 2048 held-out inputs: before ([\d.]+)%, after ([\d.]+)%/.exec(stdout);
    expect(m, stdout).to.not.equal(null);
    const before = Number((m as RegExpExecArray)[1]) / 100;
    const after = Number((m as RegExpExecArray)[2]) / 100;
    expect(before).to.be.at.most(BEFORE_AT_MOST);
    expect(after).to.be.at.least(AFTER_AT_LEAST);
    // the loss falls epoch by epoch (printed for epochs 1, 5, 10)
    const losses = [...stdout.matchAll(/epoch +\d+: loss ([\d.]+)/g)].map((x) => Number(x[1]));
    expect(losses.length).to.equal(3);
    expect(losses[2]).to.be.below(losses[0] as number);
  });
});

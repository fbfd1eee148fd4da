// The package as a user gets it: dist/ through package.json "exports" from
// ESM and CommonJS, and the "bin" entry. (npm test builds dist/ first.)
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

const root = path.join(__dirname, '..');
const node = (args: string[]) => execFileSync(process.execPath, args, { cwd: root, encoding: 'utf8' }).trim();

describe('package', () => {
  it("imports by name from ESM (named exports of the CommonJS build)", () => {
    const out = node([
      '--input-type=module',
      '-e',
      "import { Tensor, quantizeSync, SlimTensorError } from 'slimtensor'; const q = quantizeSync(Tensor.from(new Float32Array(64).fill(1), [2, 32]), { format: 'q8_0' }); console.log(q.data.length, typeof SlimTensorError);",
    ]);
    expect(out).to.equal('68 function');
  });

  it('requires by name from CommonJS', () => {
    const out = node(['-e', "const st = require('slimtensor'); console.log(Object.keys(st).includes('quantize'), st.backends().cpu.threads > 0)"]);
    expect(out).to.equal('true true');
  });

  it('runs the slimtensor bin', () => {
    const pkg = require('../package.json') as { bin: { slimtensor: string } };
    const info = JSON.parse(node([pkg.bin.slimtensor, 'backends', '--json'])) as { cpu: { kernel: string } };
    expect(['avx512', 'avx2', 'scalar']).to.include(info.cpu.kernel);
  });
});

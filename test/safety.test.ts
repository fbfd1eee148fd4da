// Memory safety at the native boundary (issue 18): the ways a plain-JS
// program crashed, aborted or hung the process run in child processes
// (test/support/safety-child.ts), which must exit normally and report what
// every call returned. Scenarios share a child where they leave the
// process as they found it; those that lower its address-space limit get
// their own. Scenario 10 (a value found bad, then read again) and the
// thread pool's exceptions are also tested natively under ASan
// (test/native/quant_core_test.cc, test/native/pool_test.cc,
// test/native/sparse_core_test.cc).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { backends } from '../lib/index';
import { skip } from './support/skip';

const root = path.join(__dirname, '..');
const childScript = path.join(__dirname, 'support', 'safety-child.ts');

type Report = Record<string, unknown>;

/**
 * Runs scenarios in one child; fails (naming the scenario it was in) unless
 * the child exits with status 0; returns each scenario's report.
 */
function runChild(names: string[], env: Record<string, string> = {}): Record<string, Report> {
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', childScript, ...names], {
    cwd: root,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 120000,
  });
  const how = r.signal ? `signal ${r.signal}` : `status ${r.status}`;
  const last = /scenario (\w+)\n?$/.exec(r.stderr)?.[1] ?? '?';
  expect(r.status, `the child ended with ${how} in scenario ${last}\n${r.stderr.slice(-2000)}`).to.equal(0);
  const reports: Record<string, Report> = {};
  for (const line of r.stdout.trim().split('\n')) {
    const { name, report } = JSON.parse(line) as { name: string; report: Report };
    reports[name] = report;
  }
  return reports;
}

/** Skips the test, with the child's reason, when the scenario could not run there. */
function skipIf(report: Report, ctx: Mocha.Context): void {
  if (typeof report.skipped === 'string') skip(ctx, report.skipped);
}

describe('safety: plain JS racing an async call', () => {
  let reports: Record<string, Report> = {};
  before(function () {
    this.timeout(180000);
    reports = runChild(['labels', 'topk', 'unstructured', 'refused', 'terminate', 'transfer', 'exitDuringCall']);
  });

  it('labels rewritten mid-call (2e9, C+3): the sync result, and nothing written past the gradient', () => {
    const r = reports.labels as { outcomes: string[]; canary: boolean };
    expect(r.outcomes).to.have.length(14);
    expect(r.outcomes.every((o) => o === 'same'), r.outcomes.join(', ')).to.equal(true);
    expect(r.canary).to.equal(true);
  });

  it('top-k teacher indices rewritten mid-call: the sync result', () => {
    const r = reports.topk as { outcomes: string[] };
    expect(r.outcomes).to.have.length(7);
    expect(r.outcomes.every((o) => o === 'same'), r.outcomes.join(', ')).to.equal(true);
  });

  it('pruneUnstructured input rewritten between its passes: a threshold it held, or ERR_VALUE', () => {
    const r = reports.unstructured as { outcomes: string[] };
    expect(r.outcomes).to.have.length(7);
    expect(r.outcomes.every((o) => o === 'held' || o === 'changed'), r.outcomes.join(', ')).to.equal(true);
  });

  it('resizable and shared buffers are refused up front, through lib/ and the raw binding', () => {
    const r = reports.refused as { codes: Record<string, string>; message: string };
    expect(r.codes).to.deep.equal({
      resizableQuantizedData: 'ERR_VALUE',
      resizableImportance: 'ERR_VALUE',
      resizableRawDequantize: 'ERR_VALUE',
      resizableRawDequantizeSync: 'ERR_VALUE',
      sharedTensor: 'ERR_VALUE',
      sharedTensorSync: 'ERR_VALUE',
      sharedQuantizedData: 'ERR_VALUE',
      sharedLabels: 'ERR_VALUE',
      sharedRawDequantizeSync: 'ERR_VALUE',
    });
    expect(r.message).to.match(/^dequantizeSync: data is backed by a SharedArrayBuffer; copy it/);
  });

  it('worker.terminate() during an async call, on the resolve and the reject path', () => {
    const r = reports.terminate as { runs: string[]; after: number };
    expect(r.runs).to.have.length(2);
    for (const run of r.runs) expect(run).to.match(/^(resolve|reject): (terminated|settled before terminate)$/);
    expect(r.after).to.equal(2 * 34 * 4); // q8_0 of [4, 64] in the same thread afterwards
  });

  it('process.exit() during an async call: exit status 0', () => {
    expect(reports.exitDuringCall).to.deep.equal({ started: true }); // and runChild saw status 0
  });

  it(`a buffer transferred mid-call, receiver collected: no crash, the sync result (this runtime: ${backends().buffers.async})`, () => {
    const r = reports.transfer as { mode: string; outcomes: Record<string, string[]> };
    expect(r.mode).to.equal(backends().buffers.async);
    expect(r.outcomes.structuredClone).to.have.length(3);
    for (const [way, runs] of Object.entries(r.outcomes)) {
      for (const o of runs) {
        // mark: Node 20 copies a marked buffer, Node 21+ refuses to transfer it.
        if (r.mode === 'mark') expect(o, way).to.be.oneOf(['copied, same result', 'refused (DataCloneError), same result', 'refused (TypeError), same result']);
        else expect(o, way).to.equal('moved, ERR_DETACHED');
      }
    }
  });
});

describe('safety: async calls on private copies (SLIMTENSOR_ASYNC_BUFFERS=copy)', () => {
  it('transfers and byte streams move the memory away; the kernel keeps its copy and the call rejects with ERR_DETACHED', () => {
    const r = runChild(['transfer'], { SLIMTENSOR_ASYNC_BUFFERS: 'copy' }).transfer as { mode: string; outcomes: Record<string, string[]> };
    expect(r.mode).to.equal('copy');
    expect(Object.keys(r.outcomes)).to.include.members(['structuredClone', 'MessagePort', 'byte stream']);
    for (const [way, runs] of Object.entries(r.outcomes)) {
      for (const o of runs) expect(o, way).to.equal('moved, ERR_DETACHED');
    }
  });
});

describe('safety: the buffer policy follows what ArrayBuffer.prototype.transfer does to a marked buffer', () => {
  it('a transfer() that detaches it (Node 21+ without detach keys): copy', () => {
    const r = runChild(['probe'], { SAFETY_TRANSFER: 'detaches' }).probe;
    expect(r).to.deep.equal({ async: 'copy', reason: 'ArrayBuffer.prototype.transfer detaches buffers marked untransferable on this runtime', same: true });
  });

  it('a transfer() that refuses (a detach key): mark', () => {
    const r = runChild(['probe'], { SAFETY_TRANSFER: 'refuses' }).probe;
    expect(r.async).to.equal('mark');
    expect(r.reason).to.match(/detach key/);
    expect(r.same).to.equal(true);
  });
});

describe('safety: failures inside the native code (under an address-space limit)', () => {
  let reports: Record<string, Report> = {};
  before(function () {
    this.timeout(180000);
    // Each lowers the limit further: degenerate leaves room for outOfMemory's inputs.
    reports = runChild(['degenerate', 'outOfMemory']);
  });

  it('degenerate shapes return at once ([1e14, 0])', function () {
    const r = reports.degenerate as { pruned: number[]; ms: number };
    skipIf(r, this);
    expect(r.pruned).to.deep.equal([0, 0]);
    expect(r.ms).to.be.below(1000);
  });

  it('std::bad_alloc in a kernel, on the calling thread or a pool thread: ERR_SHAPE, sync and async', function () {
    const r = reports.outOfMemory as { codes: string[] };
    skipIf(r, this);
    expect(r.codes).to.deep.equal(['ERR_SHAPE', 'ERR_SHAPE', 'ERR_SHAPE', 'ERR_SHAPE']);
  });

  it('threads that cannot be created: the pool runs on the ones it has and gives the same bytes', function () {
    const r = runChild(['threads']).threads as { same: boolean[] }; // a child of its own: it needs room the others took
    skipIf(r, this);
    expect(r.same).to.deep.equal([true, true]);
  });
});

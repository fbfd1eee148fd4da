// The fuzz worker process: the parent (fuzz/main.ts) sends case numbers over
// IPC; for each, this writes the mutated input to its case folder, says
// 'begin' (so a crash or hang from here on is pinned to the case and its
// input is on disk), runs the entry points and reports the outcomes.
import * as path from 'node:path';
import { runEntries, writeCase, type CaseInfo, type EntryOutcome } from './cases';
import { targetNamed } from './targets';

export type ToChild = { type: 'case'; target: string; seed: number; index: number } | { type: 'stop' };
export type FromChild =
  | { type: 'ready' }
  | { type: 'begin'; info: CaseInfo; caseDir: string }
  | { type: 'entry'; name: string }
  | { type: 'end'; info: CaseInfo; results: EntryOutcome[] };

const workDir = process.argv[2];
if (workDir === undefined || process.send === undefined) {
  process.stderr.write('fuzz/child.ts is started by fuzz/main.ts\n');
  process.exit(2);
}
const send = (m: FromChild): void => {
  process.send?.(m);
};

process.on('message', (m: ToChild) => {
  if (m.type === 'stop') {
    process.disconnect();
    return;
  }
  void (async () => {
    const target = targetNamed(m.target);
    if (target === undefined) throw new Error(`unknown target ${m.target}`);
    const caseDir = path.join(workDir, 'case');
    const { info, spec, input } = await writeCase(target, m.seed, m.index, caseDir);
    send({ type: 'begin', info, caseDir });
    const results = await runEntries(spec, input, caseDir, m.index, (name) => send({ type: 'entry', name }));
    send({ type: 'end', info, results });
  })().catch((e) => {
    // The harness itself failed (not an entry point): say so loudly.
    process.stderr.write(`fuzz child: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(3);
  });
});
send({ type: 'ready' });

#!/usr/bin/env node
// Writes models/stories260K-eval.tokens: the bundled evaluation text of
// stories260K as token ids (little-endian int32), sampled from the model by
// llama.cpp (node-llama-cpp, a devDependency) at temperature 1, one story
// per sequence: BOS, then 127 tokens (the model's context of 128); a story
// that ends (EOS) before is dropped and another seed tried, so every chunk
// of 128 is one story from its start. Sequences are concatenated. Run once;
// the file is committed.
//   node scripts/make-eval-tokens.mjs [sequences=16]
// With `calib`: models/stories260K-calib.tokens, the calibration text of the
// quality table (bench calibration), made the same way from other seeds
// (from 5000), so it shares no sequence with the evaluation file.
//   node scripts/make-eval-tokens.mjs 32 calib
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const sequences = Number(process.argv[2] ?? 16);
const calib = process.argv[3] === 'calib';
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: path.join(root, 'models', 'stories260K.gguf') });
const ctx = await model.createContext({ contextSize: 128, threads: 1 });
const BOS = 1, EOS = 2, LENGTH = 128;
const all = [];
for (let s = 0, seed = calib ? 5000 : 1000; s < sequences; seed++) {
  const seq = ctx.getSequence();
  const tokens = [BOS];
  for await (const t of seq.evaluate([BOS], { temperature: 1, topK: 0, topP: 1, minP: 0, seed })) {
    if (t === EOS) break;
    tokens.push(t);
    if (tokens.length >= LENGTH) break;
  }
  seq.dispose();
  if (tokens.length < LENGTH) continue;
  all.push(...tokens);
  s++;
}
const out = path.join(root, 'models', calib ? 'stories260K-calib.tokens' : 'stories260K-eval.tokens');
writeFileSync(out, Buffer.from(new Int32Array(all).buffer));
console.log(`${out}: ${all.length} tokens in ${sequences} sequences`);
await ctx.dispose();
await model.dispose();

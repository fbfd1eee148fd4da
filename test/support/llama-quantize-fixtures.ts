// The generated models of test/fixtures/llama-quantize/ and, run as a
// script, the maker of its fixtures: each model written by
// writeLlamaGguf, an importance matrix made by llama.cpp's llama-imatrix
// on a calibration text, and llama-quantize's output for every preset
// with and without it (two kept whole, the rest as SHA-256 of the file and
// of every tensor). The tests regenerate the models and compare
// slimtensor's outputs with these; they never run llama.cpp.
//
//   node --import tsx test/support/llama-quantize-fixtures.ts [LLAMA_CPP_DIR]
//
// LLAMA_CPP_DIR holds llama-quantize and llama-imatrix (default
// ../shared/peers/llama.cpp, the c392e50 build). Run from the package root.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GGUFReader } from '../../lib/formats/gguf';
import { byteTokenizer, writeLlamaGguf, type LlamaShape } from './llama-gguf';
import { Rng } from './random';

export const FIXTURES = path.join(__dirname, '..', 'fixtures', 'llama-quantize');

/**
 * The fixture models. a: 256 wide (every row fits the K-quants' 256-value
 * super-blocks), 4 layers, GQA 4, F16, its own output head. b: 64 wide, 12
 * layers (llama-quantize orders blk.10 after blk.9; the first eighth is
 * one layer), GQA 2, F32, tied embeddings; every K-quant takes a fallback.
 */
export const FIXTURE_MODELS: Readonly<Record<'a' | 'b', LlamaShape>> = {
  a: { layers: 4, hidden: 256, ffn: 256, heads: 4, kvHeads: 1, vocab: 259, dtype: 'F16', seed: 11, tokenizer: byteTokenizer() },
  b: { layers: 12, hidden: 64, ffn: 128, heads: 4, kvHeads: 2, vocab: 259, dtype: 'F32', seed: 12, tied: true, tokenizer: byteTokenizer() },
};

/**
 * Presets compared per model. Model b leaves out Q2_K/Q3_K: c392e50 falls
 * back from them to IQ4_NL on rows of 64, a type slimtensor does not write
 * (slimtensor falls back to Q4_0, as llama.cpp does today).
 */
export const FIXTURE_PRESETS: Readonly<Record<'a' | 'b', readonly string[]>> = {
  a: ['q4_0', 'q4_1', 'q5_0', 'q5_1', 'q8_0', 'q2_k', 'q3_k_s', 'q3_k_m', 'q3_k_l', 'q4_k_s', 'q4_k_m', 'q5_k_s', 'q5_k_m', 'q6_k'],
  b: ['q4_0', 'q4_1', 'q5_0', 'q5_1', 'q8_0', 'q4_k_s', 'q4_k_m', 'q5_k_s', 'q5_k_m', 'q6_k'],
};

/** The imatrix path as llama-quantize was given it (it is written into the output's metadata). */
export function fixtureImatrixArg(model: 'a' | 'b'): string {
  return `test/fixtures/llama-quantize/${model}.imatrix.dat`;
}

/** The outputs kept whole (the others are in manifest.json as hashes). */
export const WHOLE_OUTPUTS = ['a.q4_k_m.gguf', 'a.q4_k_m.imatrix.gguf'];

export interface ManifestOutput {
  model: 'a' | 'b';
  preset: string;
  imatrix: boolean;
  sha256: string;
  bytes: number;
  /** [name, ggml type, the first 12 hex digits of the SHA-256 of its data] in file order (the file's whole hash is the check; these say which tensor differs). */
  tensors: [string, string, string][];
}

export interface Manifest {
  peer: string;
  models: Record<'a' | 'b', { sha256: string; bytes: number }>;
  outputs: ManifestOutput[];
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** [name, type, first 12 hex digits of the SHA-256 of its data] of every tensor of a GGUF file. */
export async function tensorHashes(file: string): Promise<[string, string, string][]> {
  const g = await GGUFReader.open(file);
  try {
    const out: [string, string, string][] = [];
    for (const t of g.tensors) out.push([t.name, t.type, sha256(await g.readTensorBytes(t)).slice(0, 12)]);
    return out;
  } finally {
    await g.close();
  }
}

/** A calibration text of simple English sentences (deterministic). */
export function calibrationText(): string {
  const words = 'once upon a time there was a little girl named lily she liked to play in the park with her friend tom one day they found a big red ball under a tree the sun was warm and the birds were singing happy songs they ran and laughed until the sky turned orange then mom called them home for dinner'.split(' ');
  const rng = new Rng(3);
  const lines: string[] = [];
  for (let i = 0; i < 40; i++) {
    const n = 8 + rng.int(9);
    const s = Array.from({ length: n }, () => words[rng.int(words.length)]).join(' ');
    lines.push(`${s[0]?.toUpperCase()}${s.slice(1)}.`);
  }
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  const peer = path.resolve(process.argv[2] ?? path.join('..', 'shared', 'peers', 'llama.cpp'));
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-lq-fixtures-'));
  try {
    await fsp.mkdir(FIXTURES, { recursive: true });
    await fsp.writeFile(path.join(tmp, 'calibration.txt'), calibrationText());
    const manifest: Manifest = { peer: 'llama.cpp c392e50 (llama-quantize, llama-imatrix), CPU build', models: {} as Manifest['models'], outputs: [] };
    for (const model of ['a', 'b'] as const) {
      const input = path.join(tmp, `${model}.gguf`);
      await writeLlamaGguf(input, FIXTURE_MODELS[model]);
      const bytes = await fsp.readFile(input);
      manifest.models[model] = { sha256: sha256(bytes), bytes: bytes.length };
      // The imatrix: llama-imatrix over the calibration text in chunks of 64 tokens, one thread.
      execFileSync(path.join(peer, 'llama-imatrix'), ['-m', input, '-f', 'calibration.txt', '-o', path.resolve(fixtureImatrixArg(model)), '-c', '64', '-t', '1'], { cwd: tmp, stdio: 'ignore' });
      for (const preset of FIXTURE_PRESETS[model]) {
        for (const imatrix of [false, true]) {
          const name = `${model}.${preset}${imatrix ? '.imatrix' : ''}.gguf`;
          const out = WHOLE_OUTPUTS.includes(name) ? path.join(FIXTURES, name) : path.join(tmp, name);
          execFileSync(path.join(peer, 'llama-quantize'), [...(imatrix ? ['--imatrix', fixtureImatrixArg(model)] : []), input, out, preset.toUpperCase(), '1'], { stdio: 'ignore' });
          const b = await fsp.readFile(out);
          manifest.outputs.push({ model, preset, imatrix, sha256: sha256(b), bytes: b.length, tensors: await tensorHashes(out) });
        }
      }
    }
    // One output per line group, one tensor per line: small diffs when regenerated.
    const outputs = manifest.outputs.map((o) => {
      const { tensors, ...head } = o;
      return `  ${JSON.stringify(head).slice(0, -1)},\n   "tensors": [\n${tensors.map((t) => `    ${JSON.stringify(t)}`).join(',\n')}\n   ]}`;
    });
    const text = `{\n "peer": ${JSON.stringify(manifest.peer)},\n "models": ${JSON.stringify(manifest.models)},\n "outputs": [\n${outputs.join(',\n')}\n ]\n}\n`;
    JSON.parse(text);
    await fsp.writeFile(path.join(FIXTURES, 'manifest.json'), text);
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}

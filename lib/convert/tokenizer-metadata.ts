// Hugging Face tokenizer files -> the tokenizer.ggml.* metadata llama.cpp's
// convert_hf_to_gguf.py writes, so llama.cpp tokenizes the converted model
// exactly as the Hugging Face tokenizer does:
// - tokenizer.json with a byte-level BPE model -> `gpt2`, with the merges and
//   tokenizer.ggml.pre named by recognising the pre-tokenizer's expressions
//   (llama.cpp's converter recognises a hash of a check text's tokens; the
//   expressions are what that hash stands for) — an unknown one is
//   ERR_UNSUPPORTED rather than a silent wrong guess;
// - tokenizer.json with a SentencePiece-style BPE model (byte fallback,
//   `▁` for spaces) -> `llama`, with scores derived from the merge ranks
//   (llama.cpp's converter writes -1000 for every score here, which makes
//   llama.cpp merge in a different order than Hugging Face; ranks do not);
// - tokenizer.model (SentencePiece BPE) when there is no tokenizer.json.
// Special ids, add_bos/add_eos and the chat template come from
// tokenizer_config.json (then config.json), as gguf-py's SpecialVocab reads
// them. Every failure names the file and the key.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { SlimTensorError } from '../errors';
import type { GGUFMetadataEntry } from '../formats/gguf';
import { jsonTooDeep, MAX_JSON_DEPTH } from '../formats/json';
import { PRE_TOKENIZERS } from '../model/pre-tokenizers';
import { TOKEN_TYPES } from '../model/token-types';
import { parseSentencePieceModel, SP_MODEL_TYPES } from './sentencepiece-model';

export interface TokenizerMetadataOptions {
  /**
   * The model's vocabulary size (config.json `vocab_size`; read from the
   * folder when omitted). Ids the tokenizer does not define up to it are
   * padded with `[PAD<id>]` unused tokens, as llama.cpp's converter does; a
   * tokenizer with more tokens than this is an error.
   */
  vocabSize?: number;
}

/** Largest tokenizer file read into memory (real ones are at most tens of MB). */
const MAX_FILE_BYTES = 512 * 1024 * 1024;

type Json = Record<string, unknown>;

function fail(file: string, key: string, message: string, code: 'ERR_FORMAT' | 'ERR_UNSUPPORTED' = 'ERR_FORMAT'): never {
  throw new SlimTensorError(`${file}: ${key} ${message}`, code);
}

async function readOptional(file: string): Promise<Uint8Array | undefined> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) fail(file, '(the file)', 'is not a regular file');
    if (st.size > MAX_FILE_BYTES) fail(file, '(the file)', `is ${st.size} bytes, more than the ${MAX_FILE_BYTES} a tokenizer file may have`);
    const buf = new Uint8Array(st.size);
    let done = 0;
    while (done < buf.length) {
      const { bytesRead } = await fh.read(buf, done, buf.length - done, done);
      if (bytesRead === 0) fail(file, '(the file)', `ended after ${done} of ${st.size} bytes (truncated while reading?)`);
      done += bytesRead;
    }
    return buf;
  } finally {
    await fh.close();
  }
}

async function readJson(file: string): Promise<Json | undefined> {
  const bytes = await readOptional(file);
  if (bytes === undefined) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    fail(file, '(the file)', `is not valid JSON: ${(e as Error).message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(file, '(the file)', 'must hold a JSON object');
  if (jsonTooDeep(v)) fail(file, '(the file)', `nests arrays or objects more than ${MAX_JSON_DEPTH} deep`);
  return v as Json;
}

function isObject(v: unknown): v is Json {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * The most tokens a vocabulary may have: 8x the largest in use (Gemma's
 * 262,144). Ids up to the vocabulary size are materialised (padding makes a
 * string per missing id), so an id or vocab_size of 2^31 in a hostile file
 * would otherwise mean billions of strings.
 */
export const MAX_VOCAB = 1 << 21;

/** A token id from JSON: an integer 0..MAX_VOCAB-1. */
function tokenId(v: unknown, file: string, key: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= MAX_VOCAB) fail(file, key, `must be a token id (an integer 0..${MAX_VOCAB - 1}), got ${JSON.stringify(v)?.slice(0, 40)}`);
  return v;
}

/** gguf-py's does_token_look_special: added tokens named like markers are control tokens even when not flagged special. */
function looksSpecial(t: string): boolean {
  return (
    t === '<pad>' ||
    t === '<mask>' ||
    t === '<2mass>' ||
    t === '[@BOS@]' ||
    (t.startsWith('<|') && t.endsWith('|>')) ||
    (t.startsWith('<｜') && t.endsWith('｜>')) ||
    (t.startsWith('<unused') && t.endsWith('>'))
  );
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

/** A special-token entry of tokenizer_config.json: a string or `{ content }`. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return undefined;
}

interface Specials {
  ids: Partial<Record<'bos' | 'eos' | 'unk' | 'sep' | 'pad', number>>;
  addBos?: boolean;
  addEos?: boolean;
}

/** Which pre_tokenizer / normalizer / model pieces a tokenizer.json has, flattened out of Sequences. */
function flatten(v: unknown, listKey: string): Json[] {
  if (!isObject(v)) return [];
  if (v.type === 'Sequence' && Array.isArray(v[listKey])) return (v[listKey] as unknown[]).flatMap((x) => flatten(x, listKey));
  return [v];
}

function describe(parts: Json[]): string {
  const name = (t: unknown): string => (typeof t === 'string' ? t : JSON.stringify(t) ?? 'undefined');
  return parts.map((p) => (isObject(p.pattern) ? `${name(p.type)}(${JSON.stringify(p.pattern)})` : name(p.type))).join(' + ') || 'none';
}

/** tokenizer.ggml.pre for a byte-level tokenizer.json, recognised from its pre-tokenizer. */
function recognisePre(tj: Json, file: string): string {
  const norms = flatten(tj.normalizer, 'normalizers');
  // NFC is accepted: llama.cpp does not normalise, so NFC input (the usual case) tokenizes alike.
  const badNorm = norms.find((n) => n.type !== 'NFC');
  if (badNorm !== undefined) fail(file, 'normalizer', `${describe(norms)} has no llama.cpp equivalent for a byte-level BPE model`, 'ERR_UNSUPPORTED');
  const parts = flatten(tj.pre_tokenizer, 'pretokenizers');
  const last = parts[parts.length - 1];
  if (last === undefined || last.type !== 'ByteLevel') fail(file, 'pre_tokenizer', `${describe(parts)} does not end in ByteLevel; not a pre-tokenizer llama.cpp knows`, 'ERR_UNSUPPORTED');
  if (last.add_prefix_space === true) fail(file, 'pre_tokenizer', 'ByteLevel.add_prefix_space = true has no llama.cpp equivalent', 'ERR_UNSUPPORTED');
  const byteLevelRegex = last.use_regex !== false;
  const front = parts.slice(0, -1);
  let split: string | undefined;
  let digits = false;
  if (front.length === 1 && front[0]?.type === 'Split') {
    const s = front[0];
    const re = isObject(s.pattern) ? s.pattern.Regex : undefined;
    if (typeof re !== 'string' || s.behavior !== 'Isolated' || s.invert === true) fail(file, 'pre_tokenizer', `Split ${JSON.stringify(s).slice(0, 200)} is not an isolated regex split`, 'ERR_UNSUPPORTED');
    split = re;
  } else if (front.length === 1 && front[0]?.type === 'Digits' && front[0].individual_digits === true) {
    digits = true;
  } else if (front.length > 0) {
    fail(file, 'pre_tokenizer', `${describe(parts)} is not a pre-tokenizer llama.cpp knows`, 'ERR_UNSUPPORTED');
  }
  if (split !== undefined && byteLevelRegex) fail(file, 'pre_tokenizer', `${describe(parts)}: a Split followed by ByteLevel's own GPT-2 regex is not a pre-tokenizer llama.cpp knows`, 'ERR_UNSUPPORTED');
  const known = PRE_TOKENIZERS.find((p) => p.hf !== undefined && p.hf.split === split && (p.hf.byteLevelRegex ?? false) === byteLevelRegex && (p.hf.digits ?? false) === digits);
  if (known !== undefined) return known.names[0] as string;
  return fail(file, 'pre_tokenizer', `${describe(parts)}${split !== undefined ? '' : byteLevelRegex ? ' (GPT-2 regex)' : ' (no regex)'} is not a pre-tokenizer llama.cpp knows; known: ${PRE_TOKENIZERS.filter((p) => p.hf).map((p) => p.names[0]).join(', ')}`, 'ERR_UNSUPPORTED');
}

/** add_space_prefix for a SentencePiece-style tokenizer.json (Prepend / Metaspace), checking the rest is what llama.cpp does. */
function spmSpacePrefix(tj: Json, file: string): boolean {
  const norms = flatten(tj.normalizer, 'normalizers');
  const pres = flatten(tj.pre_tokenizer, 'pretokenizers');
  let prefix = false;
  let escapes = false;
  for (const n of norms) {
    if (n.type === 'Prepend' && n.prepend === '▁') prefix = true;
    else if (n.type === 'Replace' && isObject(n.pattern) && n.pattern.String === ' ' && n.content === '▁') escapes = true;
    else fail(file, 'normalizer', `${describe(norms)} has no llama.cpp equivalent for a SentencePiece model`, 'ERR_UNSUPPORTED');
  }
  for (const p of pres) {
    if (p.type === 'Metaspace' && (p.replacement ?? '▁') === '▁' && p.split !== true) {
      escapes = true;
      prefix = p.prepend_scheme !== 'never' && p.add_prefix_space !== false;
    } else fail(file, 'pre_tokenizer', `${describe(pres)} has no llama.cpp equivalent for a SentencePiece model`, 'ERR_UNSUPPORTED');
  }
  if (!escapes) fail(file, 'normalizer', 'does not turn spaces into ▁ (neither Replace nor Metaspace): not a SentencePiece-style tokenizer', 'ERR_UNSUPPORTED');
  return prefix;
}

function readAddedTokens(tj: Json, file: string): AddedToken[] {
  const raw = tj.added_tokens ?? [];
  if (!Array.isArray(raw)) fail(file, 'added_tokens', 'must be an array');
  return raw.map((t, i) => {
    if (!isObject(t) || typeof t.content !== 'string') fail(file, `added_tokens[${i}]`, 'must be an object with a string content');
    return { id: tokenId(t.id, file, `added_tokens[${i}].id`), content: t.content, special: t.special === true };
  });
}

/** Special ids and add_bos/add_eos as gguf-py's SpecialVocab finds them. */
function readSpecials(tj: Json | undefined, cfg: Json | undefined, modelCfg: Json | undefined, added: readonly AddedToken[], n: number, files: { tj: string; cfg: string; model: string }): Specials {
  const out: Specials = { ids: {} };
  const byContent = new Map<string, number>();
  for (const a of added) if (!byContent.has(a.content)) byContent.set(a.content, a.id);
  const set = (k: keyof Specials['ids'], id: number | undefined): void => {
    if (id !== undefined && id < n && out.ids[k] === undefined) out.ids[k] = id;
  };
  let bosText = tokenContent(cfg?.bos_token) ?? tokenContent(cfg?.cls_token);
  let eosText = tokenContent(cfg?.eos_token) ?? tokenContent(cfg?.sep_token);
  // The post-processor says whether BOS / EOS are added (TemplateProcessing's single template).
  const procs = isObject(tj?.post_processor) ? (Array.isArray(tj.post_processor.processors) ? tj.post_processor.processors : [tj.post_processor]) : [];
  for (const p of procs as unknown[]) {
    if (!isObject(p) || p.type !== 'TemplateProcessing' || !Array.isArray(p.single) || p.single.length < 2) continue;
    const special = (x: unknown): string | undefined => (isObject(x) && isObject(x.SpecialToken) && typeof x.SpecialToken.id === 'string' ? x.SpecialToken.id : undefined);
    const first = special(p.single[0]);
    const last = special(p.single[p.single.length - 1]);
    if (first !== undefined) {
      if (cfg === undefined) bosText = first;
      out.addBos = first === bosText;
    }
    if (last !== undefined) {
      if (cfg === undefined) eosText = last;
      out.addEos = last === eosText;
    }
  }
  const texts: [keyof Specials['ids'], string | undefined][] = [
    ['bos', bosText],
    ['eos', eosText],
    ['unk', tokenContent(cfg?.unk_token)],
    ['sep', tokenContent(cfg?.sep_token)],
    ['pad', tokenContent(cfg?.pad_token)],
  ];
  for (const [k, t] of texts) if (t !== undefined) set(k, byContent.get(t));
  for (const k of ['bos', 'eos', 'unk', 'sep', 'pad'] as const) {
    const v = modelCfg?.[`${k}_token_id`];
    if (v !== undefined && v !== null && !Array.isArray(v)) set(k, tokenId(v, files.model, `${k}_token_id`));
  }
  for (const k of ['bos', 'eos'] as const) {
    const v = cfg?.[`add_${k}_token`];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'boolean') fail(files.cfg, `add_${k}_token`, `must be a boolean, got ${JSON.stringify(v)}`);
    if (k === 'bos') out.addBos = v;
    else out.addEos = v;
  }
  return out;
}

interface Built {
  model: 'gpt2' | 'llama';
  pre: string;
  tokens: string[];
  types: Int32Array;
  scores?: Float32Array;
  merges?: string[];
  addSpacePrefix?: boolean;
  specials: Specials;
}

/** The vocabulary size the model declares, or the tokenizer's own. */
function padTo(tokens: (string | undefined)[], types: number[], scores: number[] | undefined, want: number | undefined, tokFile: string, cfgFile: string): void {
  if (want !== undefined && tokens.length > want) {
    fail(cfgFile, 'vocab_size', `is ${want} but ${tokFile} defines ${tokens.length} tokens (ids up to ${tokens.length - 1})`);
  }
  const n = want ?? tokens.length;
  for (let i = 0; i < n; i++) {
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`;
      types[i] = TOKEN_TYPES.unused;
      if (scores !== undefined) scores[i] = -1000;
    }
  }
}

function fromTokenizerJson(tj: Json, cfg: Json | undefined, modelCfg: Json | undefined, vocabSize: number | undefined, files: { tj: string; cfg: string; model: string }): Built {
  const file = files.tj;
  const model = tj.model;
  if (!isObject(model)) fail(file, 'model', 'is missing or not an object');
  if (model.type !== 'BPE') fail(file, 'model.type', `is ${JSON.stringify(model.type)}; only BPE tokenizers convert to llama.cpp's llama/gpt2 models`, 'ERR_UNSUPPORTED');
  if (!isObject(model.vocab)) fail(file, 'model.vocab', 'must be an object of token -> id');
  const vocab = model.vocab;
  const rawMerges = model.merges;
  if (!Array.isArray(rawMerges)) fail(file, 'model.merges', 'must be an array');
  const decoderType = isObject(tj.decoder) ? tj.decoder.type : undefined;
  const preParts = flatten(tj.pre_tokenizer, 'pretokenizers');
  const byteLevel = preParts.some((p) => p.type === 'ByteLevel') || decoderType === 'ByteLevel';
  const spmStyle = model.byte_fallback === true || flatten(tj.normalizer, 'normalizers').some((n) => n.type === 'Prepend' || n.type === 'Replace') || preParts.some((p) => p.type === 'Metaspace');
  if (!byteLevel && !spmStyle) fail(file, 'model', 'is a BPE model that is neither byte-level (ByteLevel pre-tokenizer) nor SentencePiece-style (byte_fallback, ▁ for spaces)', 'ERR_UNSUPPORTED');
  const kind: 'gpt2' | 'llama' = byteLevel ? 'gpt2' : 'llama';
  const pre = kind === 'gpt2' ? recognisePre(tj, file) : 'default';
  const addSpacePrefix = kind === 'llama' ? spmSpacePrefix(tj, file) : undefined;

  const tokens: (string | undefined)[] = [];
  const types: number[] = [];
  for (const [text, rawId] of Object.entries(vocab)) {
    const id = tokenId(rawId, file, `model.vocab[${JSON.stringify(text).slice(0, 40)}]`);
    if (tokens[id] !== undefined) fail(file, 'model.vocab', `gives id ${id} to both ${JSON.stringify(tokens[id])} and ${JSON.stringify(text)}`);
    if (vocabSize !== undefined && id >= vocabSize) fail(files.model, 'vocab_size', `is ${vocabSize} but ${file} has token id ${id}`);
    tokens[id] = text;
    types[id] = TOKEN_TYPES.normal;
  }
  const added = readAddedTokens(tj, file);
  for (const a of added) {
    if (vocabSize !== undefined && a.id >= vocabSize) fail(files.model, 'vocab_size', `is ${vocabSize} but ${file} has added token id ${a.id}`);
    let text = a.content;
    let type: number = a.special || looksSpecial(text) ? TOKEN_TYPES.control : TOKEN_TYPES.userDefined;
    // gguf-py pre-normalises user-defined tokens' escaped spaces in byte-level vocabularies.
    if (type === TOKEN_TYPES.userDefined && kind === 'gpt2') text = text.replaceAll('▁', ' ');
    if (kind === 'llama' && tokens[a.id] === text && !a.special && !looksSpecial(text)) type = types[a.id] ?? type;
    tokens[a.id] = text;
    types[a.id] = type;
  }
  const unk = typeof model.unk_token === 'string' ? model.unk_token : undefined;
  if (kind === 'llama') {
    tokens.forEach((t, i) => {
      if (t === undefined) return;
      if (/^<0x[0-9A-Fa-f]{2}>$/.test(t)) types[i] = TOKEN_TYPES.byte;
      else if (t === unk) types[i] = TOKEN_TYPES.unknown;
    });
  }

  // Merges, normalised to llama.cpp's "left right" strings (a space inside a part is stored as U+0120).
  const merges: string[] = rawMerges.map((m, i) => {
    if (typeof m === 'string') {
      if (m.indexOf(' ', 1) < 0) fail(file, `model.merges[${i}]`, `${JSON.stringify(m).slice(0, 60)} is not "left right"`);
      return m;
    }
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') {
      return `${m[0].replaceAll(' ', '\u0120')} ${m[1].replaceAll(' ', '\u0120')}`;
    }
    return fail(file, `model.merges[${i}]`, 'must be a "left right" string or a [left, right] pair');
  });

  let scores: number[] | undefined;
  if (kind === 'llama') {
    // Score = -(rank of the first merge that makes the token), so that
    // llama.cpp's highest-score-first merging follows Hugging Face's
    // lowest-rank-first order; tokens no merge makes rank last.
    const byText = new Map<string, number>();
    tokens.forEach((t, i) => t !== undefined && byText.set(t, i));
    scores = tokens.map(() => Number.NaN);
    merges.forEach((m, rank) => {
      const at = m.indexOf(' ', 1);
      const id = byText.get(m.slice(0, at) + m.slice(at + 1));
      if (id !== undefined && Number.isNaN(scores?.[id])) (scores as number[])[id] = -rank;
    });
    for (let i = 0; i < scores.length; i++) {
      if (!Number.isNaN(scores[i])) continue;
      const t = tokens[i];
      // Single characters and special tokens never come out of a merge: 0 keeps them neutral.
      scores[i] = t === undefined || [...t].length <= 1 || types[i] !== TOKEN_TYPES.normal ? 0 : -1e9;
    }
  }
  padTo(tokens, types, scores, vocabSize, file, files.model);
  const n = tokens.length;
  const specials = readSpecials(tj, cfg, modelCfg, added, n, files);
  if (kind === 'llama' && specials.ids.unk === undefined && unk !== undefined) {
    const id = tokens.indexOf(unk);
    if (id >= 0) specials.ids.unk = id;
  }
  return {
    model: kind,
    pre,
    tokens: tokens as string[],
    types: Int32Array.from(types, (t) => t ?? TOKEN_TYPES.normal),
    scores: scores === undefined ? undefined : Float32Array.from(scores),
    merges: kind === 'gpt2' ? merges : undefined,
    addSpacePrefix,
    specials,
  };
}

function fromSentencePiece(bytes: Uint8Array, cfg: Json | undefined, modelCfg: Json | undefined, addedJson: Json | undefined, vocabSize: number | undefined, files: { spm: string; cfg: string; model: string; added: string }): Built {
  const sp = parseSentencePieceModel(bytes, files.spm);
  if (sp.modelType !== SP_MODEL_TYPES.bpe) {
    const name = Object.entries(SP_MODEL_TYPES).find(([, v]) => v === sp.modelType)?.[0] ?? String(sp.modelType);
    fail(files.spm, 'trainer_spec.model_type', `is ${name}; only SentencePiece BPE models convert to llama.cpp's llama model`, 'ERR_UNSUPPORTED');
  }
  const tokens: (string | undefined)[] = sp.pieces.map((p) => p.piece);
  const types: number[] = sp.pieces.map((p) => p.type);
  const scores: number[] = sp.pieces.map((p) => p.score);
  // added_tokens.json: extra user-defined tokens after the model's pieces.
  if (addedJson !== undefined) {
    const extra = Object.entries(addedJson).map(([t, id]) => [t, tokenId(id, files.added, JSON.stringify(t))] as [string, number]).filter(([, id]) => id >= sp.pieces.length);
    extra.sort((a, b) => a[1] - b[1]);
    extra.forEach(([t, id], k) => {
      if (id !== sp.pieces.length + k) fail(files.added, JSON.stringify(t), `has id ${id}; added tokens must follow the ${sp.pieces.length} pieces without gaps`);
      tokens[id] = t;
      types[id] = TOKEN_TYPES.userDefined;
      scores[id] = -1000;
    });
  }
  // tokenizer_config.json's added_tokens_decoder marks control / user-defined tokens.
  const decoder = cfg?.added_tokens_decoder;
  if (isObject(decoder)) {
    for (const [k, d] of Object.entries(decoder)) {
      const id = tokenId(Number(k), files.cfg, `added_tokens_decoder[${JSON.stringify(k)}]`);
      if (!isObject(d) || typeof d.content !== 'string') fail(files.cfg, `added_tokens_decoder[${JSON.stringify(k)}]`, 'must have a string content');
      if (id >= tokens.length) continue;
      tokens[id] = d.content;
      types[id] = d.special === true ? TOKEN_TYPES.control : TOKEN_TYPES.userDefined;
    }
  }
  padTo(tokens, types, scores, vocabSize, files.spm, files.model);
  const n = tokens.length;
  const specials = readSpecials(undefined, cfg, modelCfg, [], n, { tj: files.spm, cfg: files.cfg, model: files.model });
  for (const [k, id] of [['unk', sp.unkId], ['bos', sp.bosId], ['eos', sp.eosId], ['pad', sp.padId]] as const) {
    if (specials.ids[k] === undefined && id >= 0 && id < n) specials.ids[k] = id;
  }
  return { model: 'llama', pre: 'default', tokens: tokens as string[], types: Int32Array.from(types), scores: Float32Array.from(scores), addSpacePrefix: sp.addDummyPrefix, specials };
}

/** tokenizer.chat_template entries: tokenizer_config.json's, else chat_template.jinja / chat_template.json. */
async function chatTemplates(dir: string, cfg: Json | undefined, cfgFile: string): Promise<GGUFMetadataEntry[]> {
  let t: unknown = cfg?.chat_template;
  if (t === undefined) {
    const jinja = await readOptional(path.join(dir, 'chat_template.jinja'));
    if (jinja !== undefined) t = new TextDecoder().decode(jinja);
    else t = (await readJson(path.join(dir, 'chat_template.json')))?.chat_template;
  }
  if (t === undefined || t === null) return [];
  if (typeof t === 'string') return [{ key: 'tokenizer.chat_template', type: 'string', value: t }];
  if (!Array.isArray(t)) fail(cfgFile, 'chat_template', 'must be a string or a list of { name, template }');
  const out: GGUFMetadataEntry[] = [];
  t.forEach((e, i) => {
    if (!isObject(e) || typeof e.name !== 'string' || typeof e.template !== 'string') fail(cfgFile, `chat_template[${i}]`, 'must be { name, template } strings');
    const key = e.name === 'default' ? 'tokenizer.chat_template' : `tokenizer.chat_template.${e.name}`;
    out.push({ key, type: 'string', value: e.template });
  });
  return out;
}

/**
 * The tokenizer.ggml.* metadata (and tokenizer.chat_template) for a Hugging
 * Face model folder, as llama.cpp's convert_hf_to_gguf.py writes it.
 * Reads tokenizer.json (or tokenizer.model), tokenizer_config.json and
 * config.json. ERR_UNSUPPORTED for tokenizers llama.cpp cannot reproduce
 * (Unigram/WordPiece models, unknown pre-tokenizers); ERR_FORMAT naming the
 * file and key for malformed ones.
 */
export async function ggufTokenizerMetadata(hfFolder: string, options: TokenizerMetadataOptions = {}): Promise<GGUFMetadataEntry[]> {
  const dir = path.resolve(hfFolder);
  const st = await fsp.stat(dir).catch(() => undefined);
  if (st === undefined || !st.isDirectory()) throw new SlimTensorError(`ggufTokenizerMetadata: ${dir} is not a folder`, 'ERR_VALUE');
  const files = {
    tj: path.join(dir, 'tokenizer.json'),
    cfg: path.join(dir, 'tokenizer_config.json'),
    model: path.join(dir, 'config.json'),
    spm: path.join(dir, 'tokenizer.model'),
    added: path.join(dir, 'added_tokens.json'),
  };
  const cfg = await readJson(files.cfg);
  const modelCfg = await readJson(files.model);
  let vocabSize = options.vocabSize;
  if (vocabSize !== undefined && (!Number.isSafeInteger(vocabSize) || vocabSize <= 0 || vocabSize > MAX_VOCAB)) throw new SlimTensorError(`ggufTokenizerMetadata: options.vocabSize must be an integer 1..${MAX_VOCAB}, got ${String(vocabSize)}`, 'ERR_VALUE');
  if (vocabSize === undefined && modelCfg?.vocab_size !== undefined) {
    const v = modelCfg.vocab_size;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0 || v > MAX_VOCAB) fail(files.model, 'vocab_size', `must be an integer 1..${MAX_VOCAB}, got ${JSON.stringify(v)}`);
    vocabSize = v;
  }
  const tj = await readJson(files.tj);
  let built: Built;
  if (tj !== undefined) built = fromTokenizerJson(tj, cfg, modelCfg, vocabSize, files);
  else {
    const spm = await readOptional(files.spm);
    if (spm === undefined) throw new SlimTensorError(`ggufTokenizerMetadata: ${dir} has neither tokenizer.json nor tokenizer.model`, 'ERR_FORMAT');
    built = fromSentencePiece(spm, cfg, modelCfg, await readJson(files.added), vocabSize, files);
  }
  const seen = new Map<string, number>();
  built.tokens.forEach((t, i) => {
    const j = seen.get(t);
    if (j !== undefined) fail(tj !== undefined ? files.tj : files.spm, '(tokens)', `define ${JSON.stringify(t).slice(0, 60)} twice (ids ${j} and ${i}); llama.cpp refuses duplicate tokens`);
    seen.set(t, i);
  });

  const e: GGUFMetadataEntry[] = [
    { key: 'tokenizer.ggml.model', type: 'string', value: built.model },
    { key: 'tokenizer.ggml.pre', type: 'string', value: built.pre },
    { key: 'tokenizer.ggml.tokens', type: 'array', itemType: 'string', value: built.tokens },
  ];
  if (built.scores !== undefined) e.push({ key: 'tokenizer.ggml.scores', type: 'array', itemType: 'f32', value: built.scores });
  e.push({ key: 'tokenizer.ggml.token_type', type: 'array', itemType: 'i32', value: built.types });
  if (built.merges !== undefined) e.push({ key: 'tokenizer.ggml.merges', type: 'array', itemType: 'string', value: built.merges });
  const idKeys = { bos: 'tokenizer.ggml.bos_token_id', eos: 'tokenizer.ggml.eos_token_id', unk: 'tokenizer.ggml.unknown_token_id', sep: 'tokenizer.ggml.seperator_token_id', pad: 'tokenizer.ggml.padding_token_id' } as const;
  for (const k of ['bos', 'eos', 'unk', 'sep', 'pad'] as const) {
    const id = built.specials.ids[k];
    if (id !== undefined) e.push({ key: idKeys[k], type: 'u32', value: id });
  }
  // Written explicitly (false included) so llama.cpp adds exactly what the Hugging Face tokenizer adds.
  const addBos = built.specials.addBos ?? (tj === undefined);
  const addEos = built.specials.addEos ?? false;
  const cfgOrTj = cfg !== undefined ? files.cfg : files.tj;
  if (addBos && built.specials.ids.bos === undefined) fail(cfgOrTj, 'add_bos_token', 'is true but no BOS token could be found (bos_token)');
  if (addEos && built.specials.ids.eos === undefined) fail(cfgOrTj, 'add_eos_token', 'is true but no EOS token could be found (eos_token)');
  e.push({ key: 'tokenizer.ggml.add_bos_token', type: 'bool', value: addBos });
  e.push({ key: 'tokenizer.ggml.add_eos_token', type: 'bool', value: addEos });
  if (built.addSpacePrefix !== undefined) e.push({ key: 'tokenizer.ggml.add_space_prefix', type: 'bool', value: built.addSpacePrefix });
  e.push(...(await chatTemplates(dir, cfg, files.cfg)));
  return e;
}

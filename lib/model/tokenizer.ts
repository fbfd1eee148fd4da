// Text <-> token ids, reproducing llama.cpp's tokenizers exactly (its
// llama-vocab.cpp is the specification; facts, not code, were taken from
// it): SentencePiece-style BPE over scores with byte fallback
// (tokenizer.ggml.model `llama`) and byte-level BPE over merge ranks with
// llama.cpp's pre-tokenizer expressions (`gpt2`). Special tokens are cut out
// of the text first, longest first, as llama.cpp does; control tokens only
// when asked (parseSpecial), user-defined ones always.
//
// Built from GGUF metadata (tokenizerFromGguf) or from a Hugging Face folder
// (tokenizerFromHfFolder), which goes through the same metadata the HF →
// GGUF converter writes, so a converted file and its folder tokenize alike.
import { ggufTokenizerMetadata } from '../convert/tokenizer-metadata';
import { SlimTensorError } from '../errors';
import type { GGUFMetadataEntry, GGUFValue } from '../formats/gguf';
import { compiledPatterns, preTokenizer, splitWords, type PreTokenizer } from './pre-tokenizers';
import { TOKEN_TYPES } from './token-types';

export { TOKEN_TYPES } from './token-types';

// llama.cpp's token attributes (bit flags).
const ATTR_UNKNOWN = 1 << 0;
const ATTR_UNUSED = 1 << 1;
const ATTR_NORMAL = 1 << 2;
const ATTR_CONTROL = 1 << 3;
const ATTR_USER_DEFINED = 1 << 4;
const ATTR_BYTE = 1 << 5;
const ATTR_FROM_TYPE = [0, ATTR_NORMAL, ATTR_UNKNOWN, ATTR_CONTROL, ATTR_USER_DEFINED, ATTR_UNUSED, ATTR_BYTE];

/** The escaped space of SentencePiece vocabularies (U+2581). */
const SPM_SPACE = '\u2581';

/** GPT-2's byte <-> printable character mapping (byte-level BPE stores bytes as these characters). */
const BYTE_TO_CHAR: string[] = [];
const CHAR_TO_BYTE = new Map<number, number>();
{
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    const cp = printable ? b : next++;
    BYTE_TO_CHAR[b] = String.fromCharCode(cp);
    CHAR_TO_BYTE.set(cp, b);
  }
}

/** Token texts llama.cpp treats as end-of-turn / end-of-generation / FIM markers whatever their stored type (facts from llama-vocab.cpp). */
const EOT_TEXTS = ['<|eot_id|>', '<|im_end|>', '<|end|>', '<end_of_turn>', '<|endoftext|>', '<|end_of_text|>', '<EOT>', '_<EOT>', '[EOT]', '<｜end▁of▁sentence｜>', '<end_of_utterance>'];
const EOM_TEXTS = ['<|eom_id|>'];
const FIM_TEXTS = [
  ['<|fim_prefix|>', '<fim-prefix>', '<fim_prefix>', '<｜fim▁begin｜>', '<PRE>', '▁<PRE>', '<|code_prefix|>', '<|prefix|>'],
  ['<|fim_suffix|>', '<fim-suffix>', '<fim_suffix>', '<｜fim▁hole｜>', '<SUF>', '▁<SUF>', '<|code_suffix|>', '<|suffix|>'],
  ['<|fim_middle|>', '<fim-middle>', '<fim_middle>', '<｜fim▁end｜>', '<MID>', '▁<MID>', '<|code_middle|>', '<|middle|>'],
  ['<|fim_pad|>', '<fim-pad>', '<fim_pad>', '<PAD>', '[PAD]'],
  ['<|fim_repo|>', '<|repo_name|>', '<fim-repo>', '<REPO>', '<reponame>'],
  ['<|file_sep|>'],
];
const FIM_FIRST_EOG = 3;
const EOG_TEXTS = [
  '<|eot_id|>', '<|im_end|>', '<|end|>', '<|return|>', '<|call|>', '<|flush|>', '<|calls|>', '<end_of_turn>', '<|endoftext|>', '</s>', '<|eom_id|>',
  '<EOT>', '_<EOT>', '[EOT]', '[EOS]', '<|end_of_text|>', '<end_of_utterance>', '<eos>', '<turn|>', '<|tool_response>', '<｜end▁of▁sentence｜>', '[e~[',
];
/** Always rendered as text (llama.cpp makes them user-defined). */
const ALWAYS_RENDERED = ['<|channel|>', '<|message|>', '<|start|>', '<|constrain|>'];

export type TokenizerModel = 'llama' | 'gpt2';

export interface EncodeOptions {
  /** Add BOS / EOS as the vocabulary asks (addBos / addEos). Default true. */
  addSpecial?: boolean;
  /** Turn the text of control tokens (e.g. `<|im_start|>`) into those tokens. Default false, as llama.cpp's; user-defined tokens are always matched. */
  parseSpecial?: boolean;
}

export interface DecodeOptions {
  /** Render control tokens as their text. Default false (they decode to nothing). */
  special?: boolean;
  /** Drop a leading BOS / trailing EOS that addSpecial would have added. Default false. */
  removeSpecial?: boolean;
}

/** A vocabulary as the metadata describes it, checked. */
interface Vocab {
  model: TokenizerModel;
  tokens: string[];
  /** Token text -> id (texts are unique: duplicates are rejected). */
  toId: Map<string, number>;
  attrs: Uint8Array;
  scores: Float32Array;
  merges: Map<string, number>;
  pre: PreTokenizer | undefined;
  preName: string;
  addSpacePrefix: boolean;
  ignoreMerges: boolean;
  cleanSpaces: boolean;
  addBos: boolean;
  addEos: boolean;
  ids: { bos?: number; eos?: number; eot?: number; eom?: number; unk?: number; pad?: number; sep?: number };
  eog: Set<number>;
}

type Metadata = ReadonlyMap<string, GGUFValue> | readonly GGUFMetadataEntry[];

function metadataMap(metadata: Metadata): ReadonlyMap<string, GGUFValue> {
  if (metadata instanceof Map) return metadata as ReadonlyMap<string, GGUFValue>;
  if (Array.isArray(metadata)) return new Map((metadata as readonly GGUFMetadataEntry[]).map((e) => [e.key, e.value]));
  throw new SlimTensorError('tokenizerFromGguf: metadata must be a GGUFReader\'s metadata Map or entries array', 'ERR_VALUE');
}

const WHERE = 'tokenizerFromGguf';

function formatError(key: string, message: string): SlimTensorError {
  return new SlimTensorError(`${WHERE}: ${key} ${message}`, 'ERR_FORMAT');
}

function optionalId(md: ReadonlyMap<string, GGUFValue>, key: string, n: number): number | undefined | null {
  const v = md.get(key);
  if (v === undefined) return null;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw formatError(key, `must be a non-negative integer token id, got ${typeof v === 'object' ? 'an array' : String(v)}`);
  // llama.cpp ignores an out-of-range id and keeps its default.
  return v < n ? v : undefined;
}

function optionalBool(md: ReadonlyMap<string, GGUFValue>, key: string): boolean | undefined {
  const v = md.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw formatError(key, `must be a bool, got ${typeof v}`);
  return v;
}

function readVocab(md: ReadonlyMap<string, GGUFValue>): Vocab {
  const model = md.get('tokenizer.ggml.model');
  if (model === undefined) throw formatError('tokenizer.ggml.model', 'is missing (the file has no tokenizer)');
  if (model !== 'llama' && model !== 'gpt2') {
    throw new SlimTensorError(`${WHERE}: tokenizer.ggml.model ${JSON.stringify(typeof model === 'string' ? model : String(model))} is not supported; supported: llama (SentencePiece BPE), gpt2 (byte-level BPE)`, 'ERR_UNSUPPORTED');
  }
  const rawTokens = md.get('tokenizer.ggml.tokens');
  if (!Array.isArray(rawTokens) || rawTokens.some((t) => typeof t !== 'string')) throw formatError('tokenizer.ggml.tokens', 'must be an array of strings');
  const n = rawTokens.length;
  if (n === 0) throw formatError('tokenizer.ggml.tokens', 'is empty');
  if (n > 0x7fffffff) throw formatError('tokenizer.ggml.tokens', 'has more tokens than int32 ids allow');
  // llama.cpp renames empty tokens so they stay unique and never match.
  const tokens = (rawTokens as string[]).map((t, i) => (t === '' ? `[EMPTY_${i}]` : t));
  const toId = new Map<string, number>();
  tokens.forEach((t, i) => {
    const j = toId.get(t);
    if (j !== undefined) throw formatError('tokenizer.ggml.tokens', `has the token ${JSON.stringify(t.slice(0, 64))} twice (ids ${j} and ${i})`);
    toId.set(t, i);
  });

  const scores = new Float32Array(n);
  const rawScores = md.get('tokenizer.ggml.scores');
  if (rawScores !== undefined) {
    if (!(rawScores instanceof Float32Array || rawScores instanceof Int32Array)) throw formatError('tokenizer.ggml.scores', 'must be an f32 (or i32) array');
    if (rawScores.length < n) throw formatError('tokenizer.ggml.scores', `has ${rawScores.length} entries for ${n} tokens`);
    for (let i = 0; i < n; i++) scores[i] = rawScores[i] as number;
  }
  const attrs = new Uint8Array(n).fill(ATTR_NORMAL);
  const rawTypes = md.get('tokenizer.ggml.token_type');
  if (rawTypes !== undefined) {
    if (!(rawTypes instanceof Int32Array)) throw formatError('tokenizer.ggml.token_type', 'must be an i32 array');
    if (rawTypes.length < n) throw formatError('tokenizer.ggml.token_type', `has ${rawTypes.length} entries for ${n} tokens`);
    for (let i = 0; i < n; i++) attrs[i] = ATTR_FROM_TYPE[rawTypes[i] as number] ?? 0;
  }

  const merges = new Map<string, number>();
  let pre: PreTokenizer | undefined;
  let preName = 'default';
  const rawPre = md.get('tokenizer.ggml.pre');
  if (rawPre !== undefined && typeof rawPre !== 'string') throw formatError('tokenizer.ggml.pre', 'must be a string');
  if (model === 'gpt2') {
    const rawMerges = md.get('tokenizer.ggml.merges');
    if (!Array.isArray(rawMerges) || rawMerges.some((m) => typeof m !== 'string')) throw formatError('tokenizer.ggml.merges', 'must be an array of strings (byte-level BPE needs its merges)');
    (rawMerges as string[]).forEach((m, rank) => {
      // llama.cpp splits at the first space after the first character; the first rank of a pair wins.
      const at = m.indexOf(' ', 1);
      const key = at < 0 ? ' ' : m;
      if (!merges.has(key)) merges.set(key, rank);
    });
    preName = rawPre === undefined || rawPre === '' ? 'default' : rawPre;
    pre = preTokenizer(preName, WHERE);
  }

  const spm = model === 'llama';
  const ids: Vocab['ids'] = spm ? { bos: 1, eos: 2, unk: 0 } : { bos: 11, eos: 11 };
  for (const k of ['bos', 'eos', 'unk'] as const) if ((ids[k] as number) >= n) ids[k] = undefined;
  const keys: [keyof Vocab['ids'], string][] = [
    ['bos', 'tokenizer.ggml.bos_token_id'],
    ['eos', 'tokenizer.ggml.eos_token_id'],
    ['eot', 'tokenizer.ggml.eot_token_id'],
    ['eom', 'tokenizer.ggml.eom_token_id'],
    ['unk', 'tokenizer.ggml.unknown_token_id'],
    ['sep', 'tokenizer.ggml.seperator_token_id'],
    ['pad', 'tokenizer.ggml.padding_token_id'],
  ];
  for (const [k, key] of keys) {
    const v = optionalId(md, key, n);
    if (v !== null && v !== undefined) ids[k] = v;
  }

  const addBos = optionalBool(md, 'tokenizer.ggml.add_bos_token') ?? (spm ? true : (pre as PreTokenizer).addBos);
  const addEos = optionalBool(md, 'tokenizer.ggml.add_eos_token') ?? false;
  if (addBos && ids.bos === undefined) throw formatError('tokenizer.ggml.add_bos_token', 'is true but the vocabulary has no BOS token (tokenizer.ggml.bos_token_id)');
  if (addEos && ids.eos === undefined) throw formatError('tokenizer.ggml.add_eos_token', 'is true but the vocabulary has no EOS token (tokenizer.ggml.eos_token_id)');
  const addSpacePrefix = optionalBool(md, 'tokenizer.ggml.add_space_prefix') ?? spm;

  const vocab: Vocab = {
    model,
    tokens,
    toId,
    attrs,
    scores,
    merges,
    pre,
    preName: spm ? 'default' : preName,
    addSpacePrefix,
    ignoreMerges: pre?.ignoreMerges ?? false,
    cleanSpaces: pre?.cleanSpaces ?? false,
    addBos,
    addEos,
    ids,
    eog: new Set(),
  };
  markSpecialTexts(vocab);
  return vocab;
}

/** llama.cpp's load-time fix-ups by token text: EOT/EOM/FIM/EOG tokens become control tokens, a few are always rendered. */
function markSpecialTexts(v: Vocab): void {
  const byText = v.toId;
  const forceControl = (id: number): void => {
    v.attrs[id] = (v.attrs[id] as number) | ATTR_CONTROL;
  };
  const firstOf = (texts: readonly string[]): number | undefined => {
    for (const t of texts) {
      const id = byText.get(t);
      if (id !== undefined) return id;
    }
    return undefined;
  };
  // Found by text (not given by the metadata): made control tokens too.
  if (v.ids.eot === undefined) {
    v.ids.eot = firstOf(EOT_TEXTS);
    if (v.ids.eot !== undefined) forceControl(v.ids.eot);
  }
  if (v.ids.eom === undefined) {
    v.ids.eom = firstOf(EOM_TEXTS);
    if (v.ids.eom !== undefined) forceControl(v.ids.eom);
  }
  FIM_TEXTS.forEach((group, k) => {
    const id = firstOf(group);
    if (id === undefined) return;
    forceControl(id);
    if (k >= FIM_FIRST_EOG) v.eog.add(id); // FIM pad, repo and file separator end generation
  });
  for (const t of EOG_TEXTS) {
    const id = byText.get(t);
    if (id !== undefined) {
      v.eog.add(id);
      forceControl(id);
    }
  }
  for (const t of ALWAYS_RENDERED) {
    const id = byText.get(t);
    if (id !== undefined) v.attrs[id] = ATTR_USER_DEFINED;
  }
  for (const id of [v.ids.eos, v.ids.eot, v.ids.eom]) if (id !== undefined) v.eog.add(id);
  // o200k-harmony style vocabularies: <|end|> is not an end of generation there.
  const has = (t: string): boolean => byText.has(t);
  const end = byText.get('<|end|>');
  if (end !== undefined && v.eog.has(end) && ((has('<|return|>') && has('<|call|>')) || (has('<|calls|>') && has('<|flush|>')))) {
    v.eog.delete(end);
    v.attrs[end] = ATTR_USER_DEFINED;
  }
  const s = byText.get('</s>');
  if (s !== undefined && has('<|tool_response>')) {
    v.eog.delete(s);
    v.attrs[s] = ATTR_NORMAL;
  }
}

/** A prefix tree over the special tokens' text, for finding all their occurrences in one pass. */
interface TrieNode {
  next: Map<number, TrieNode>;
  id: number;
}

/** Appends int32 values to a growing buffer. */
class IdSink {
  buf = new Int32Array(256);
  length = 0;
  push(id: number): void {
    if (this.length === this.buf.length) {
      const b = new Int32Array(this.buf.length * 2);
      b.set(this.buf);
      this.buf = b;
    }
    this.buf[this.length++] = id;
  }
  pushAll(ids: Int32Array): void {
    if (this.length + ids.length > this.buf.length) {
      let size = this.buf.length * 2;
      while (size < this.length + ids.length) size *= 2;
      const b = new Int32Array(size);
      b.set(this.buf.subarray(0, this.length));
      this.buf = b;
    }
    this.buf.set(ids, this.length);
    this.length += ids.length;
  }
  done(): Int32Array {
    return this.buf.slice(0, this.length);
  }
}

/** Words up to this many symbols merge by scanning (cheaper than the heap's allocations). */
const SHORT_WORD = 24;

/**
 * mergeSymbols for short words: the same choice (lowest priority, then
 * leftmost) found by a scan over the current pairs instead of a heap.
 */
export function mergeShort(word: string, starts: number[], priority: (a: string, b: string) => number): number[] {
  const n = starts.length;
  const bounds = starts.slice();
  bounds.push(word.length);
  const text: string[] = [];
  for (let i = 0; i < n; i++) text.push(word.slice(bounds[i], bounds[i + 1]));
  const pri: number[] = [];
  for (let i = 0; i + 1 < n; i++) pri.push(priority(text[i] as string, text[i + 1] as string));
  for (;;) {
    let best = -1;
    let bp = Infinity;
    for (let i = 0; i < pri.length; i++) {
      if ((pri[i] as number) < bp) {
        bp = pri[i] as number;
        best = i;
      }
    }
    if (best < 0) break;
    text[best] = (text[best] as string) + (text[best + 1] as string);
    text.splice(best + 1, 1);
    bounds.splice(best + 1, 1);
    pri.splice(best, 1);
    if (best > 0) pri[best - 1] = priority(text[best - 1] as string, text[best] as string);
    if (best < text.length - 1) pri[best] = priority(text[best] as string, text[best + 1] as string);
  }
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) out.push(bounds[i] as number, bounds[i + 1] as number);
  return out;
}

/**
 * Bigram merging as llama.cpp does it, for both models: repeatedly merge
 * the adjacent pair with the best priority (lowest value; ties go to the
 * leftmost pair) until no adjacent pair has one. `priority` returns
 * Infinity for pairs that may not merge. Returns the final symbols as
 * [start, end) offsets into `word`.
 */
export function mergeSymbols(word: string, starts: number[], priority: (a: string, b: string) => number): number[] {
  const n = starts.length;
  if (n <= SHORT_WORD) return mergeShort(word, starts, priority);
  const start = Int32Array.from(starts);
  const end = new Int32Array(n);
  for (let i = 0; i < n; i++) end[i] = i + 1 < n ? (starts[i + 1] as number) : word.length;
  const prev = new Int32Array(n);
  const next = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  const alive = new Uint8Array(n).fill(1);
  // Binary heap of candidate merges: (priority, left, size).
  let hp = new Float64Array(Math.max(16, n));
  let hl = new Int32Array(hp.length);
  let hs = new Int32Array(hp.length);
  let size = 0;
  const less = (i: number, j: number): boolean => (hp[i] as number) < (hp[j] as number) || ((hp[i] as number) === (hp[j] as number) && (hl[i] as number) < (hl[j] as number));
  const swap = (i: number, j: number): void => {
    const p = hp[i] as number;
    hp[i] = hp[j] as number;
    hp[j] = p;
    const l = hl[i] as number;
    hl[i] = hl[j] as number;
    hl[j] = l;
    const s = hs[i] as number;
    hs[i] = hs[j] as number;
    hs[j] = s;
  };
  const push = (left: number): void => {
    if (left < 0) return;
    const right = next[left] as number;
    if (right < 0) return;
    const p = priority(word.slice(start[left], end[left]), word.slice(start[right], end[right]));
    if (p === Infinity) return;
    if (size === hp.length) {
      const grow = <T extends Float64Array | Int32Array>(a: T, make: (k: number) => T): T => {
        const b = make(a.length * 2);
        b.set(a);
        return b;
      };
      hp = grow(hp, (k) => new Float64Array(k));
      hl = grow(hl, (k) => new Int32Array(k));
      hs = grow(hs, (k) => new Int32Array(k));
    }
    let i = size++;
    hp[i] = p;
    hl[i] = left;
    hs[i] = (end[right] as number) - (start[left] as number);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!less(i, parent)) break;
      swap(i, parent);
      i = parent;
    }
  };
  const pop = (): void => {
    size--;
    if (size > 0) {
      swap(0, size);
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < size && less(l, m)) m = l;
        if (r < size && less(r, m)) m = r;
        if (m === i) break;
        swap(i, m);
        i = m;
      }
    }
  };
  for (let i = 0; i + 1 < n; i++) push(i);
  while (size > 0) {
    const left = hl[0] as number;
    const want = hs[0] as number;
    pop();
    const right = next[left] as number;
    // Stale: a side was merged away or grew since this pair was queued.
    if (!alive[left] || right < 0 || (end[right] as number) - (start[left] as number) !== want) continue;
    end[left] = end[right] as number;
    alive[right] = 0;
    next[left] = next[right] as number;
    if ((next[right] as number) >= 0) prev[next[right] as number] = left;
    push(prev[left] as number);
    push(left);
  }
  const out: number[] = [];
  for (let i = 0; i >= 0; i = next[i] as number) out.push(start[i] as number, end[i] as number);
  return out;
}

/** UTF-8 bytes of a string (lone surrogates become U+FFFD, as TextEncoder does). */
const utf8 = new TextEncoder();

/** Word caches are bounded so a long-lived tokenizer's memory stays bounded. */
const CACHE_LIMIT = 1 << 17;

/**
 * A tokenizer. Build one with tokenizerFromGguf(reader.metadata) or
 * tokenizerFromHfFolder(dir).
 *
 * ```ts
 * const tok = tokenizerFromGguf(reader.metadata);
 * const ids = tok.encode('Hello world');        // Int32Array, BOS first when the model adds one
 * tok.decode(ids);                             // 'Hello world'
 * ```
 */
export class Tokenizer {
  /** `llama` (SentencePiece BPE) or `gpt2` (byte-level BPE). */
  readonly model: TokenizerModel;
  /** tokenizer.ggml.pre (always `default` for `llama`). */
  readonly pre: string;
  readonly vocabSize: number;
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  readonly eotId: number | undefined;
  readonly eomId: number | undefined;
  readonly padId: number | undefined;
  readonly unkId: number | undefined;
  readonly sepId: number | undefined;
  /** encode() with addSpecial adds BOS / EOS. */
  readonly addBos: boolean;
  readonly addEos: boolean;
  /** SentencePiece's leading space: text after the start or a special token gets a space in front. */
  readonly addSpacePrefix: boolean;
  /** Tokens that end generation (EOS, EOT, EOM and the like), as llama.cpp's llama_vocab_is_eog. */
  readonly eogIds: ReadonlySet<number>;

  private readonly v: Vocab;
  private readonly toId: Map<string, number>;
  private readonly specialTrie: TrieNode = { next: new Map(), id: -1 };
  /** Rank of each special token in llama.cpp's order (longest text first). */
  private readonly specialRank = new Map<number, number>();
  private readonly patterns: RegExp[];
  /** SentencePiece text can be cut before each space that follows a non-space (no token spans such a cut). */
  private readonly spmCutAtSpaces: boolean;
  private readonly wordCache = new Map<string, Int32Array>();
  private readonly pieceCache: Uint8Array[];

  /** @internal Use tokenizerFromGguf / tokenizerFromHfFolder. */
  constructor(v: Vocab) {
    this.v = v;
    this.model = v.model;
    this.pre = v.preName;
    this.vocabSize = v.tokens.length;
    this.bosId = v.ids.bos;
    this.eosId = v.ids.eos;
    this.eotId = v.ids.eot;
    this.eomId = v.ids.eom;
    this.padId = v.ids.pad;
    this.unkId = v.ids.unk;
    this.sepId = v.ids.sep;
    this.addBos = v.addBos;
    this.addEos = v.addEos;
    this.addSpacePrefix = v.addSpacePrefix;
    this.eogIds = v.eog;
    this.toId = v.toId;
    this.spmCutAtSpaces = v.model === 'llama' && !v.tokens.some((t) => t.length > 1 && t.indexOf(SPM_SPACE, 1) > 0 && /[^\u2581]\u2581/u.test(t));
    // Special tokens: control, user-defined and unknown ones, longest first.
    const special: number[] = [];
    for (let i = 0; i < v.tokens.length; i++) if ((v.attrs[i] as number) & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) special.push(i);
    special.sort((a, b) => (v.tokens[b] as string).length - (v.tokens[a] as string).length || a - b);
    special.forEach((id, rank) => {
      this.specialRank.set(id, rank);
      let node = this.specialTrie;
      const t = v.tokens[id] as string;
      for (let k = 0; k < t.length; k++) {
        const c = t.charCodeAt(k);
        let nx = node.next.get(c);
        if (nx === undefined) {
          nx = { next: new Map(), id: -1 };
          node.next.set(c, nx);
        }
        node = nx;
      }
      node.id = id;
    });
    this.patterns = v.pre === undefined ? [] : compiledPatterns(v.pre);
    this.pieceCache = new Array<Uint8Array>(v.tokens.length);
  }

  /** Text -> token ids, as llama.cpp's llama_tokenize(text, addSpecial, parseSpecial). */
  encode(text: string, options: EncodeOptions = {}): Int32Array {
    if (typeof text !== 'string') throw new SlimTensorError(`Tokenizer.encode: text must be a string, got ${typeof text}`, 'ERR_VALUE');
    const addSpecial = options.addSpecial ?? true;
    const parseSpecial = options.parseSpecial ?? false;
    const out = new IdSink();
    const v = this.v;
    if (addSpecial && v.addBos) out.push(v.ids.bos as number);
    // llama.cpp sees the text's UTF-8, where a lone surrogate is U+FFFD.
    const fragments = text === '' ? [] : this.partition(wellFormed(text), parseSpecial);
    let prevSpecial = true;
    for (const f of fragments) {
      if (typeof f === 'number') {
        out.push(f);
        prevSpecial = true;
        continue;
      }
      if (v.model === 'llama') {
        const t = (v.addSpacePrefix && prevSpecial ? ' ' : '') + f;
        this.encodeSpm(t.replaceAll(' ', SPM_SPACE), out);
      } else {
        for (const word of splitWords(f, this.patterns)) out.pushAll(this.bpeWord(word));
      }
      prevSpecial = false;
    }
    if (addSpecial && v.addEos) out.push(v.ids.eos as number);
    return out.done();
  }

  /**
   * Token ids -> text, as llama.cpp's llama_detokenize(ids, removeSpecial,
   * special): bytes of the pieces joined, then read as UTF-8 (invalid
   * sequences become U+FFFD).
   */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    return textDecoder.decode(this.decodeBytes(ids, options));
  }

  /** decode() without the final UTF-8 step. */
  decodeBytes(ids: ArrayLike<number>, options: DecodeOptions = {}): Uint8Array {
    const v = this.v;
    let from = 0;
    let to = ids.length;
    for (let i = 0; i < to; i++) this.checkId(ids[i] as number, `Tokenizer.decode: ids[${i}]`);
    let removeSpace = v.addSpacePrefix;
    if (options.removeSpecial && v.addBos && to > 0 && ids[0] === v.ids.bos) {
      removeSpace = false;
      from = 1;
    }
    if (options.removeSpecial && v.addEos && to > from && ids[to - 1] === v.ids.eos) to--;
    const special = options.special ?? false;
    let total = 0;
    for (let i = from; i < to; i++) total += this.pieceBytes(ids[i] as number, special).length;
    const bytes = new Uint8Array(total);
    let at = 0;
    for (let i = from; i < to; i++) {
      let piece = this.pieceBytes(ids[i] as number, special);
      if (removeSpace && piece.length > 0 && piece[0] === 0x20) piece = piece.subarray(1);
      removeSpace = false;
      bytes.set(piece, at);
      at += piece.length;
    }
    const out = bytes.subarray(0, at);
    return v.cleanSpaces ? cleanSpaces(out) : out;
  }

  /** The text of one token as decoding shows it, with control tokens rendered (U+FFFD for a lone byte token). */
  tokenToPiece(id: number): string {
    this.checkId(id, 'Tokenizer.tokenToPiece: id');
    return textDecoder.decode(this.pieceBytes(id, true));
  }

  /** The stored text of one token (e.g. `▁the`, `Ġthe`, `<0x0A>`). */
  tokenText(id: number): string {
    this.checkId(id, 'Tokenizer.tokenText: id');
    return this.v.tokens[id] as string;
  }

  /** The GGUF token type of a token (TOKEN_TYPES), after llama.cpp's load-time fix-ups. */
  tokenType(id: number): number {
    this.checkId(id, 'Tokenizer.tokenType: id');
    const a = this.v.attrs[id] as number;
    if (a & ATTR_UNKNOWN) return TOKEN_TYPES.unknown;
    if (a & ATTR_CONTROL) return TOKEN_TYPES.control;
    if (a & ATTR_USER_DEFINED) return TOKEN_TYPES.userDefined;
    if (a & ATTR_BYTE) return TOKEN_TYPES.byte;
    if (a & ATTR_UNUSED) return TOKEN_TYPES.unused;
    if (a & ATTR_NORMAL) return TOKEN_TYPES.normal;
    return TOKEN_TYPES.undefined;
  }

  /** The id of a token by its stored text, if the vocabulary has it. */
  tokenId(text: string): number | undefined {
    return this.toId.get(text);
  }

  /** Whether the token ends generation (EOS, EOT, ...). */
  isEog(id: number): boolean {
    return this.v.eog.has(id);
  }

  /**
   * A streaming decoder for generation: push ids one at a time and get the
   * text they complete (multi-byte characters split over byte tokens come
   * out whole). The leading-space rule applies to the first token pushed.
   */
  decoder(options: { special?: boolean } = {}): { push(id: number): string; flush(): string } {
    const td = new TextDecoder('utf-8', { ignoreBOM: true });
    let first = this.v.addSpacePrefix;
    return {
      push: (id: number): string => {
        this.checkId(id, 'Tokenizer.decoder: id');
        let piece = this.pieceBytes(id, options.special ?? false);
        if (first && piece.length > 0 && piece[0] === 0x20) piece = piece.subarray(1);
        first = false;
        return td.decode(piece, { stream: true });
      },
      flush: (): string => td.decode(),
    };
  }

  private checkId(id: number, what: string): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new SlimTensorError(`${what} is ${String(id)}, not a token id of this vocabulary (0..${this.vocabSize - 1})`, 'ERR_VALUE');
    }
  }

  /**
   * Cuts special tokens out of the text, with llama.cpp's precedence:
   * longer tokens first; each token claims its leftmost non-overlapping
   * occurrences in what longer ones left.
   */
  private partition(text: string, parseSpecial: boolean): (string | number)[] {
    const attrs = this.v.attrs;
    // All occurrences of every usable special token, from one walk of the trie per position.
    const occ: number[] = []; // (rank, position, id) triples
    const root = this.specialTrie;
    if (root.next.size > 0) {
      for (let i = 0; i < text.length; i++) {
        let node = root.next.get(text.charCodeAt(i));
        for (let k = i + 1; node !== undefined; k++) {
          if (node.id >= 0 && (parseSpecial || !((attrs[node.id] as number) & (ATTR_CONTROL | ATTR_UNKNOWN)))) {
            occ.push(this.specialRank.get(node.id) as number, i, node.id);
          }
          if (k >= text.length) break;
          node = node.next.get(text.charCodeAt(k));
        }
      }
    }
    if (occ.length === 0) return [text];
    const order = Array.from({ length: occ.length / 3 }, (_, k) => k).sort((a, b) => (occ[3 * a] as number) - (occ[3 * b] as number) || (occ[3 * a + 1] as number) - (occ[3 * b + 1] as number));
    const taken = new Uint8Array(text.length);
    const claimed: [number, number][] = [];
    let lastRank = -1;
    let lastEnd = 0;
    for (const k of order) {
      const rank = occ[3 * k] as number;
      const pos = occ[3 * k + 1] as number;
      const id = occ[3 * k + 2] as number;
      const len = (this.v.tokens[id] as string).length;
      if (rank !== lastRank) {
        lastRank = rank;
        lastEnd = 0;
      }
      if (pos < lastEnd) continue; // overlaps this token's previous match
      let free = true;
      for (let j = pos; j < pos + len; j++) {
        if (taken[j]) {
          free = false;
          break;
        }
      }
      if (!free) continue;
      taken.fill(1, pos, pos + len);
      claimed.push([pos, id]);
      lastEnd = pos + len;
    }
    claimed.sort((a, b) => a[0] - b[0]);
    const out: (string | number)[] = [];
    let at = 0;
    for (const [pos, id] of claimed) {
      if (pos > at) out.push(text.slice(at, pos));
      out.push(id);
      at = pos + (this.v.tokens[id] as string).length;
    }
    if (at < text.length) out.push(text.slice(at));
    return out;
  }

  /** SentencePiece BPE over one text fragment (spaces already escaped). */
  private encodeSpm(text: string, out: IdSink): void {
    if (!this.spmCutAtSpaces) {
      this.spmSegment(text, out);
      return;
    }
    let from = 0;
    for (let i = 1; i < text.length; i++) {
      if (text.charCodeAt(i) === 0x2581 && text.charCodeAt(i - 1) !== 0x2581) {
        this.spmSegment(text.slice(from, i), out);
        from = i;
      }
    }
    this.spmSegment(text.slice(from), out);
  }

  private spmSegment(seg: string, out: IdSink): void {
    const cached = this.wordCache.get(seg);
    if (cached !== undefined) {
      out.pushAll(cached);
      return;
    }
    const ids = new IdSink();
    const starts: number[] = [];
    for (let i = 0; i < seg.length; i++) {
      starts.push(i);
      const c = seg.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < seg.length) {
        const d = seg.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) i++;
      }
    }
    const scores = this.v.scores;
    const bounds = mergeSymbols(seg, starts, (a, b) => {
      const id = this.toId.get(a + b);
      return id === undefined ? Infinity : -(scores[id] as number);
    });
    for (let k = 0; k < bounds.length; k += 2) {
      const sym = seg.slice(bounds[k], bounds[k + 1]);
      const id = this.toId.get(sym);
      if (id !== undefined) {
        ids.push(id);
        continue;
      }
      for (const b of utf8.encode(sym)) ids.push(this.byteToken(b));
    }
    const result = ids.done();
    this.remember(seg, result);
    out.pushAll(result);
  }

  /** llama.cpp's byte_to_token for SentencePiece vocabularies: <0xNN>, else the byte as a one-character token. */
  private byteToken(b: number): number {
    const hex = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
    const id = this.toId.get(hex) ?? this.toId.get(String.fromCharCode(b));
    if (id !== undefined) return id;
    if (this.v.ids.unk !== undefined) return this.v.ids.unk;
    throw new SlimTensorError(`Tokenizer.encode: the vocabulary has no byte token ${hex} for a character it cannot spell`, 'ERR_VALUE');
  }

  /** Byte-level BPE of one pre-tokenized word. */
  private bpeWord(word: string): Int32Array {
    const cached = this.wordCache.get(word);
    if (cached !== undefined) return cached;
    let enc = '';
    for (const b of utf8.encode(word)) enc += BYTE_TO_CHAR[b] as string;
    const ids = new IdSink();
    const whole = this.v.ignoreMerges ? this.toId.get(enc) : undefined;
    if (whole !== undefined) ids.push(whole);
    else {
      const starts = Array.from({ length: enc.length }, (_, i) => i);
      const merges = this.v.merges;
      const bounds = mergeSymbols(enc, starts, (a, b) => merges.get(`${a} ${b}`) ?? Infinity);
      for (let k = 0; k < bounds.length; k += 2) {
        const sym = enc.slice(bounds[k], bounds[k + 1]);
        const id = this.toId.get(sym);
        if (id !== undefined) {
          ids.push(id);
          continue;
        }
        // llama.cpp looks each UTF-8 byte of the symbol up as a one-byte
        // token: only ASCII bytes can match; the rest are dropped.
        for (const b of utf8.encode(sym)) {
          const bid = b < 0x80 ? this.toId.get(String.fromCharCode(b)) : undefined;
          if (bid !== undefined) ids.push(bid);
        }
      }
    }
    const result = ids.done();
    this.remember(word, result);
    return result;
  }

  private remember(key: string, ids: Int32Array): void {
    if (this.wordCache.size >= CACHE_LIMIT) this.wordCache.clear();
    this.wordCache.set(key, ids);
  }

  /** llama.cpp's token_to_piece as bytes. */
  private pieceBytes(id: number, special: boolean): Uint8Array {
    const attr = this.v.attrs[id] as number;
    if (!special && attr & (ATTR_UNKNOWN | ATTR_CONTROL)) return EMPTY;
    let p = this.pieceCache[id];
    if (p === undefined) {
      p = this.piece(id, attr);
      this.pieceCache[id] = p;
    }
    return p;
  }

  private piece(id: number, attr: number): Uint8Array {
    const text = this.v.tokens[id] as string;
    if (attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED)) return utf8.encode(text);
    if (attr & ATTR_NORMAL) {
      if (this.v.model === 'llama') return utf8.encode(text.replaceAll(SPM_SPACE, ' '));
      return byteDecode(text);
    }
    if (attr & ATTR_BYTE) return Uint8Array.of(parseInt(text.slice(3, 5), 16) & 0xff);
    return EMPTY;
  }
}

const EMPTY = new Uint8Array(0);

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

function wellFormed(s: string): string {
  return /[\ud800-\udfff]/.test(s) ? s.replace(LONE_SURROGATE, '\ufffd') : s;
}
// ignoreBOM: a leading U+FEFF is text (a token of its own), not a byte-order mark.
const textDecoder = new TextDecoder('utf-8', { ignoreBOM: true });

/** A byte-level token's text back to bytes; characters outside the mapping become llama.cpp's [UNK_BYTE_...] marker. */
function byteDecode(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const b = CHAR_TO_BYTE.get(ch.codePointAt(0) as number);
    if (b !== undefined) out.push(b);
    else {
      const hex = Array.from(utf8.encode(ch), (x) => x.toString(16).padStart(2, '0')).join('');
      out.push(...utf8.encode(`[UNK_BYTE_0x${hex}${text}]`));
    }
  }
  return Uint8Array.from(out);
}

/**
 * llama.cpp's clean_up_tokenization_spaces: three passes over the bytes,
 * in place, in llama.cpp's order (each pass reads what the previous wrote).
 */
function cleanSpaces(t: Uint8Array): Uint8Array {
  const SPACE = 0x20;
  const APOS = 0x27;
  let total = t.length;
  // 1: " ?", " !", " .", " ," lose the space.
  let n = total;
  total = n > 0 ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i] as number;
    if (t[i - 1] === SPACE && (x === 0x3f || x === 0x21 || x === 0x2e || x === 0x2c)) total--;
    t[total++] = x;
  }
  // 2: a lone apostrophe between spaces loses both spaces.
  n = total;
  total = n > 0 ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i] as number;
    if (x === APOS && i + 1 < n && t[i - 1] === SPACE && t[i + 1] === SPACE) {
      total--;
      t[++i] = 0;
    }
    t[total++] = x;
  }
  // 3: " 's", " 'm", " 're", " 've" lose the space.
  n = total;
  total = n > 0 ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i] as number;
    if (t[i - 1] === SPACE && x === APOS && i + 1 < n) {
      const x1 = t[i + 1] as number;
      if (x1 === 0x73 || x1 === 0x6d) total--;
      else if (x1 !== 0x74 && x1 !== 0x64 && i + 2 < n) {
        const x2 = t[i + 2] as number;
        if ((x1 === 0x72 && x2 === 0x65) || (x1 === 0x76 && x2 === 0x65)) total--;
      }
    }
    t[total++] = x;
  }
  return t.subarray(0, total);
}

/**
 * A tokenizer from GGUF metadata: a GGUFReader's `metadata` map or
 * `entries`. Supports tokenizer.ggml.model `llama` and `gpt2` (with the
 * tokenizer.ggml.pre names in PRE_TOKENIZERS); others are ERR_UNSUPPORTED.
 * Malformed tokenizer keys are ERR_FORMAT naming the key.
 */
export function tokenizerFromGguf(metadata: Metadata): Tokenizer {
  return new Tokenizer(readVocab(metadataMap(metadata)));
}

/**
 * A tokenizer from a Hugging Face model folder (tokenizer.json with
 * tokenizer_config.json, or a SentencePiece tokenizer.model): the folder is
 * read into the GGUF metadata the converter writes (ggufTokenizerMetadata),
 * so it tokenizes exactly as its converted GGUF does in llama.cpp.
 */
export async function tokenizerFromHfFolder(dir: string): Promise<Tokenizer> {
  return tokenizerFromGguf(await ggufTokenizerMetadata(dir));
}

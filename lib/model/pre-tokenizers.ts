// llama.cpp's pre-tokenizers for byte-level BPE vocabularies
// (tokenizer.ggml.model = gpt2): for each tokenizer.ggml.pre name, the
// regular expressions that split text into words before BPE, and the
// per-name switches llama.cpp sets when it loads the vocabulary. The
// expressions are the ones llama.cpp applies (facts from its
// llama-vocab.cpp), rewritten for JavaScript's `u` regexes, with `\s` spelled
// out as Unicode White_Space, which is what llama.cpp (and Hugging Face's
// Oniguruma) match; JavaScript's own `\s` adds U+FEFF and lacks U+0085.
//
// The HF → GGUF converter (lib/convert/tokenizer-metadata.ts) recognises a
// tokenizer.json pre-tokenizer by the Hugging Face spelling of the same
// expressions (`hfSplit`), which is how it names tokenizer.ggml.pre.
import { SlimTensorError } from '../errors';

/** Unicode White_Space: llama.cpp's `\s`. */
const WS = '\\t-\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

/**
 * Rewrites a pattern written with `\s` / `\S` (Oniguruma / llama.cpp
 * meaning) into a JavaScript `u` regex with those classes spelled out.
 */
export function jsPattern(pattern: string): string {
  let out = '';
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === '\\' && i + 1 < pattern.length) {
      const n = pattern[i + 1] as string;
      if (n === 's') out += inClass ? WS : `[${WS}]`;
      else if (n === 'S') {
        if (inClass) throw new SlimTensorError(`pre-tokenizer pattern ${JSON.stringify(pattern)}: \\S inside a character class is not supported`, 'ERR_UNSUPPORTED');
        out += `[^${WS}]`;
      } else out += c + n;
      i++;
      continue;
    }
    if (c === '[' && !inClass) inClass = true;
    else if (c === ']' && inClass) inClass = false;
    out += c;
  }
  return out;
}

// The expressions, in llama.cpp's spelling (`\s` as above).
const GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
const LLAMA3 = `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;
const QWEN2 = `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;
const TEKKEN =
  '[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+';
const GPT4O =
  `[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+${CONTRACTIONS}?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*${CONTRACTIONS}?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;

// The same expressions as Hugging Face tokenizer.json files spell them
// (Split pre-tokenizers), for recognising a folder's pre-tokenizer.
const HF_LLAMA3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const HF_QWEN2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const HF_TEKKEN =
  '[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+';

/** What llama.cpp does for one tokenizer.ggml.pre family. */
export interface PreTokenizer {
  /** The names llama.cpp accepts for this behaviour (the first is the canonical one). */
  names: readonly string[];
  /** Split expressions, applied in turn to every piece the previous one left (llama.cpp spelling). */
  patterns: readonly string[];
  /** A word that is itself a token is emitted without running merges (Hugging Face's ignore_merges). */
  ignoreMerges: boolean;
  /** Decoding removes spaces before punctuation and contractions (clean_up_tokenization_spaces). */
  cleanSpaces: boolean;
  /** llama.cpp's add_bos default when tokenizer.ggml.add_bos_token is absent. */
  addBos: boolean;
  /**
   * How a Hugging Face tokenizer.json spells it: the Split regex in front
   * of a ByteLevel(use_regex=false), or `byteLevelRegex` for a bare
   * ByteLevel(use_regex=true) (GPT-2's expression), with `digits` for a
   * Digits(individual_digits=true) in front of it.
   */
  hf?: { split?: string; byteLevelRegex?: boolean; digits?: boolean };
}

function pre(names: string[], patterns: string[], flags: Partial<Pick<PreTokenizer, 'ignoreMerges' | 'cleanSpaces' | 'addBos' | 'hf'>> = {}): PreTokenizer {
  return { names, patterns, ignoreMerges: flags.ignoreMerges ?? false, cleanSpaces: flags.cleanSpaces ?? true, addBos: flags.addBos ?? false, hf: flags.hf };
}

/** The pre-tokenizers this library implements, by family. */
export const PRE_TOKENIZERS: readonly PreTokenizer[] = [
  pre(['default'], ['[\\p{P}\\$\\+<=>\\^~\\|]+', GPT2, '\\p{N}+', '[0-9][0-9][0-9]']),
  pre(['gpt-2', 'phi-2', 'jina-es', 'jina-de', 'gigachat', 'jina-v2-es', 'jina-v2-de', 'a.x-4.0', 'mellum', 'modern-bert', 'mpt', 'olmo', 'jais', 'exaone4'], [GPT2], { hf: { byteLevelRegex: true } }),
  pre(['trillion', 'granite-docling'], [GPT2], { cleanSpaces: false }),
  pre(['llama-bpe', 'llama3', 'llama-v3', 'falcon3', 'falcon-h1', 'pixtral', 'midm-2.0', 'lfm2'], [LLAMA3], { ignoreMerges: true, addBos: true, hf: { split: HF_LLAMA3 } }),
  pre(['dbrx', 'smaug-bpe'], [LLAMA3]),
  pre(['qwen2', 'deepseek-r1-qwen', 'hunyuan'], [QWEN2], { cleanSpaces: false, hf: { split: HF_QWEN2 } }),
  pre(['stablelm2', 'megrez'], [QWEN2]),
  pre(['smollm', 'command-r'], ['\\p{N}', GPT2], { cleanSpaces: false, hf: { byteLevelRegex: true, digits: true } }),
  pre(['starcoder', 'refact', 'codeshell', 'exaone', 'minerva-7b'], ['\\p{N}', GPT2]),
  pre(['falcon'], ['[\\p{P}\\$\\+<=>\\^~\\|`]+', GPT2, '[0-9][0-9][0-9]']),
  pre(['tekken'], [TEKKEN], { ignoreMerges: true, cleanSpaces: false, addBos: true, hf: { split: HF_TEKKEN } }),
  pre(['gpt-4o', 'llama4'], [GPT4O], { cleanSpaces: false }),
];

const BY_NAME = new Map<string, PreTokenizer>(PRE_TOKENIZERS.flatMap((p) => p.names.map((n) => [n, p] as [string, PreTokenizer])));

/** The pre-tokenizer llama.cpp uses for `name`; ERR_UNSUPPORTED naming the known ones otherwise. */
export function preTokenizer(name: string, where: string): PreTokenizer {
  const p = BY_NAME.get(name);
  if (p === undefined) {
    throw new SlimTensorError(`${where}: tokenizer.ggml.pre ${JSON.stringify(name)} is not supported; supported: ${[...BY_NAME.keys()].join(', ')}`, 'ERR_UNSUPPORTED');
  }
  return p;
}

/** Compiled split expressions for one pre-tokenizer (cached: compiling is not free). */
const COMPILED = new WeakMap<PreTokenizer, RegExp[]>();

export function compiledPatterns(p: PreTokenizer): RegExp[] {
  let r = COMPILED.get(p);
  if (r === undefined) {
    r = p.patterns.map((s) => new RegExp(jsPattern(s), 'gu'));
    COMPILED.set(p, r);
  }
  return r;
}

/**
 * Splits `text` into words the way llama.cpp's unicode_regex_split does:
 * each expression in turn cuts every piece into its matches and the text
 * between them; empty pieces vanish.
 */
export function splitWords(text: string, patterns: readonly RegExp[]): string[] {
  let pieces = [text];
  for (const re of patterns) {
    const next: string[] = [];
    for (const piece of pieces) {
      let last = 0;
      re.lastIndex = 0;
      for (let m = re.exec(piece); m !== null; m = re.exec(piece)) {
        const s = m.index;
        const e = s + m[0].length;
        if (e === s) {
          // An empty match (only lookahead-like patterns produce one): step over a whole code point.
          re.lastIndex = s + ((piece.codePointAt(s) ?? 0) > 0xffff ? 2 : 1);
          continue;
        }
        if (s > last) next.push(piece.slice(last, s));
        next.push(piece.slice(s, e));
        last = e;
      }
      if (last < piece.length) next.push(piece.slice(last));
    }
    pieces = next;
  }
  return pieces;
}

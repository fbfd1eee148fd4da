// `slimtensor eval` (perplexity as llama-perplexity computes it; with --base
// the KL divergence, top-1 agreement and ΔPPL against a base model) and
// `slimtensor run` (generation), on the runtime (lib/model/).
import { promises as fsp } from 'node:fs';
import { SlimTensorError } from '../errors';
import { evaluateAgainst, perplexity, type ModelEvaluation, type PerplexityResult } from '../model/evaluate';
import { loadModel, type LoadModelOptions, type Model } from '../model/model';
import { readTokenFile } from '../model/tokens';
import type { Kernel } from '../options';
import { formatBytes } from './table';

export interface ModelFlags {
  threads?: number;
  /** KV cache positions. */
  contextSize?: number;
  kernel?: Kernel;
  activations?: 'auto' | 'f32';
  /** A GGUF file giving the hyper-parameters of a folder with llama.cpp's names. */
  hparams?: string;
  signal?: AbortSignal;
}

function loadOptions(f: ModelFlags, extra: LoadModelOptions = {}): LoadModelOptions {
  return {
    ...(f.threads !== undefined ? { threads: f.threads } : {}),
    ...(f.contextSize !== undefined ? { contextSize: f.contextSize } : {}),
    ...(f.kernel !== undefined ? { kernel: f.kernel } : {}),
    ...(f.activations !== undefined ? { activations: f.activations } : {}),
    ...(f.hparams !== undefined ? { hyperparameters: f.hparams } : {}),
    ...(f.signal !== undefined ? { signal: f.signal } : {}),
    ...extra,
  };
}

/** Runs `fn` with a signal that Ctrl-C aborts (the command stops at the next block and exits 130). */
export async function interruptible<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const onSigint = (): void => {
    const e = new Error('interrupted (SIGINT)');
    e.name = 'AbortError';
    ac.abort(e);
  };
  process.on('SIGINT', onSigint);
  try {
    return await fn(ac.signal);
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}

/** "q4_0 ×154, q8_0 ×1" */
export function formatMix(m: Model): string {
  const count = new Map<string, number>();
  for (const l of m.linears) count.set(l.format, (count.get(l.format) ?? 0) + 1);
  return [...count].map(([f, n]) => `${f} ×${n}`).join(', ');
}

function describeModel(m: Model): string {
  const kernels = [...new Set(m.linears.map((l) => l.kernel))].join(', ');
  return `${m.path} (${m.architecture.gguf}; ${formatMix(m)}; ${formatBytes(m.weightBytes)} of weights; kernels ${kernels})`;
}

/** The tokens to evaluate: a token file, or a text file tokenized as llama-perplexity does (BOS as the vocabulary asks). */
async function readInput(m: Model, text: string | undefined, tokens: string | undefined): Promise<Int32Array> {
  if ((text === undefined) === (tokens === undefined)) throw new SlimTensorError('eval: give one of --text FILE or --tokens FILE', 'ERR_VALUE');
  if (text !== undefined) return m.tokenize(await fsp.readFile(text, 'utf8'));
  return readTokenFile(tokens as string);
}

export interface EvalArgs extends ModelFlags {
  model: string;
  text?: string;
  tokens?: string;
  ctx?: number;
  chunks?: number;
  base?: string;
  json?: boolean;
}

/** `eval`: perplexity (and against --base: KL, top-1 agreement, ΔPPL) as text or JSON. */
export async function evalCommand(a: EvalArgs): Promise<string> {
  if ((a.text === undefined) === (a.tokens === undefined)) throw new SlimTensorError('eval: give one of --text FILE or --tokens FILE', 'ERR_VALUE');
  // A folder with llama.cpp's names takes its hyper-parameters from a GGUF base.
  const hparams = a.hparams ?? (a.base !== undefined && /\.gguf$/i.test(a.base) ? a.base : undefined);
  const model = await loadModel(a.model, loadOptions({ ...a, ...(hparams !== undefined ? { hparams } : {}) }));
  let base: Model | undefined;
  try {
    const ids = await readInput(model, a.text, a.tokens);
    const ctx = a.ctx ?? Math.min(512, model.contextSize);
    const opts = { ctx, ...(a.chunks !== undefined ? { chunks: a.chunks } : {}), ...(a.signal ? { signal: a.signal } : {}) };
    if (a.base !== undefined) {
      base = await loadModel(a.base, loadOptions(a));
      const e = await evaluateAgainst(model, base, ids, { ...opts, tokensPath: (a.tokens ?? a.text) as string });
      if (a.json) return JSON.stringify({ model: a.model, base: a.base, ...e }, null, 2);
      return [describeModel(model), `base: ${describeModel(base)}`, renderEvaluation(e)].join('\n');
    }
    const r = await perplexity(model, ids, opts);
    if (a.json) return JSON.stringify({ model: a.model, tokens: { path: a.tokens ?? a.text, count: ids.length }, ...r }, null, 2);
    return [describeModel(model), renderPerplexity(r, ids.length)].join('\n');
  } finally {
    await model.dispose();
    await base?.dispose();
  }
}

function pct(v: number): string {
  return `${(v * 100).toFixed(2)} %`;
}

export function renderPerplexity(r: PerplexityResult, tokens: number): string {
  return [
    `tokens: ${tokens}; ${r.chunks} chunk${r.chunks === 1 ? '' : 's'} of ${r.ctx}, the second half of each scored (${r.count} tokens)`,
    `perplexity: ${r.perplexity.toFixed(4)} ± ${r.perplexityError.toFixed(4)}`,
    `speed: ${r.tokensPerSecond.toFixed(1)} tokens/s`,
  ].join('\n');
}

/** The lines a ModelEvaluation prints as (eval --base, report --eval). */
export function renderEvaluation(e: ModelEvaluation): string {
  const rel = e.deltaPerplexity / e.original.perplexity;
  return [
    `tokens: ${e.tokens.path ?? ''}${e.tokens.path ? ': ' : ''}${e.tokens.count}; ${e.chunks} chunk${e.chunks === 1 ? '' : 's'} of ${e.ctx}, the second half of each scored (${e.scored} tokens)`,
    `perplexity: ${e.compressed.perplexity.toFixed(4)} ± ${e.compressed.perplexityError.toFixed(4)} (base ${e.original.perplexity.toFixed(4)} ± ${e.original.perplexityError.toFixed(4)}); ΔPPL ${e.deltaPerplexity >= 0 ? '+' : ''}${e.deltaPerplexity.toFixed(4)} (${rel >= 0 ? '+' : ''}${pct(rel)})`,
    `KL divergence from the base: mean ${e.kl.mean.toFixed(6)}, median ${e.kl.median.toFixed(6)}, p99 ${e.kl.p99.toFixed(6)}, max ${e.kl.max.toFixed(6)}`,
    `top-1 agreement with the base: ${pct(e.kl.top1Agreement)}`,
    `speed: ${e.compressed.tokensPerSecond.toFixed(1)} tokens/s (base ${e.original.tokensPerSecond.toFixed(1)})`,
  ].join('\n');
}

export interface RunArgs extends ModelFlags {
  model: string;
  prompt?: string;
  promptTokens?: string;
  n?: number;
  temp?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  json?: boolean;
}

/** `run`: generates after a prompt; prints the tokens and prompt / generation tokens/s. */
export async function runCommand(a: RunArgs): Promise<string> {
  if ((a.prompt === undefined) === (a.promptTokens === undefined)) throw new SlimTensorError('run: give one of --prompt TEXT or --prompt-tokens ID,ID,...', 'ERR_VALUE');
  let prompt: number[] = [];
  if (a.promptTokens !== undefined) {
    prompt = a.promptTokens.split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
    if (prompt.length === 0 || !prompt.every((t) => Number.isInteger(t))) throw new SlimTensorError(`run: --prompt-tokens must be comma-separated integer ids, got ${JSON.stringify(a.promptTokens)}`, 'ERR_VALUE');
  }
  const m = await loadModel(a.model, loadOptions(a));
  try {
    if (a.prompt !== undefined) prompt = Array.from(m.tokenize(a.prompt));
    const out: number[] = [];
    let text = '';
    const t0 = performance.now();
    let first = 0;
    for await (const t of m.generate(prompt, {
      maxTokens: a.n ?? 64,
      temperature: a.temp ?? 0,
      ...(a.topK !== undefined ? { topK: a.topK } : {}),
      ...(a.topP !== undefined ? { topP: a.topP } : {}),
      ...(a.seed !== undefined ? { seed: a.seed } : {}),
      ...(a.signal ? { signal: a.signal } : {}),
    })) {
      if (out.length === 0) first = performance.now();
      out.push(t.token);
      text += t.text;
    }
    const end = performance.now();
    // The first token comes with the prompt's pass; the rest are one pass each.
    const promptSeconds = ((out.length > 0 ? first : end) - t0) / 1000;
    const genSeconds = (end - first) / 1000;
    const stats = {
      promptTokens: prompt.length,
      promptTokensPerSecond: prompt.length / promptSeconds,
      generatedTokens: out.length,
      generationTokensPerSecond: out.length > 1 ? (out.length - 1) / genSeconds : null,
    };
    const hasText = m.tokenizer !== undefined;
    if (a.json) return JSON.stringify({ model: a.model, ...(a.prompt !== undefined ? { promptText: a.prompt } : {}), prompt, tokens: out, ...(hasText ? { text } : {}), ...stats }, null, 2);
    return [
      hasText ? `${a.prompt ?? m.detokenize(prompt, { removeSpecial: true })}${text}` : out.join(' '),
      '',
      `prompt: ${stats.promptTokens} tokens, ${stats.promptTokensPerSecond.toFixed(1)} tokens/s; generation: ${stats.generatedTokens} tokens, ${stats.generationTokensPerSecond === null ? '–' : stats.generationTokensPerSecond.toFixed(2)} tokens/s`,
    ].join('\n');
  } finally {
    await m.dispose();
  }
}

/** report --eval: the compressed model against the original on a token file. */
export async function evaluateFiles(original: string, compressed: string, tokensFile: string, f: ModelFlags & { ctx?: number; chunks?: number } = {}): Promise<ModelEvaluation> {
  const ids = await readTokenFile(tokensFile);
  const hparams = f.hparams ?? (/\.gguf$/i.test(original) ? original : undefined);
  const orig = await loadModel(original, loadOptions(f));
  try {
    const comp = await loadModel(compressed, loadOptions({ ...f, ...(hparams !== undefined ? { hparams } : {}) }));
    try {
      const ctx = f.ctx ?? Math.min(512, comp.contextSize, orig.contextSize);
      return await evaluateAgainst(comp, orig, ids, { ctx, tokensPath: tokensFile, ...(f.chunks !== undefined ? { chunks: f.chunks } : {}) });
    } finally {
      await comp.dispose();
    }
  } finally {
    await orig.dispose();
  }
}

// Perplexity as llama.cpp's llama-perplexity computes it, and the KL
// divergence of a model's next-token distribution from a base model's
// (llama-perplexity --kl-divergence): non-overlapping chunks of ctx tokens,
// the first token of each replaced by BOS when the vocabulary adds one,
// logits of the whole chunk computed, and the second half scored: the
// logits at positions ctx/2 .. ctx-2 predict tokens ctx/2+1 .. ctx-1.
import { fail } from '../errors';
import { binding, callAsync } from '../native';
import type { Model } from './model';

export interface PerplexityOptions {
  /** Tokens per chunk. Default 512, at most the model's context size. */
  ctx?: number;
  /** Most chunks to evaluate (default: every whole chunk of the tokens). */
  chunks?: number;
  /** The token that replaces each chunk's first (default: the model's BOS when it adds one); null: none. */
  bos?: number | null;
  /** Evaluate against this model too: KL divergence, top-1 agreement, its perplexity. */
  base?: Model;
  signal?: AbortSignal;
  onProgress?: (p: { chunk: number; chunks: number; perplexity: number }) => void;
}

export interface KlStats {
  /** Mean over scored tokens of KL(base ‖ model), in nats. */
  mean: number;
  /** 99th percentile of the per-token KL. */
  p99: number;
  /** Median. */
  median: number;
  max: number;
  /** Fraction of scored tokens where both models' most likely token is the same. */
  top1Agreement: number;
}

export interface PerplexityResult {
  perplexity: number;
  /** Its standard error (llama.cpp's ± figure: the delta method on the mean NLL). */
  perplexityError: number;
  /** Mean negative log-likelihood per scored token (nats). */
  nll: number;
  /** Tokens scored. */
  count: number;
  chunks: number;
  ctx: number;
  /** Tokens per second through the model (every token of every chunk), wall time of its forward passes. */
  tokensPerSecond: number;
  seconds: number;
  base?: { perplexity: number; perplexityError: number; nll: number; tokensPerSecond: number; kl: KlStats; deltaPerplexity: number };
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const r = p * (sorted.length - 1);
  const lo = Math.floor(r);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return (sorted[lo] as number) + (r - lo) * ((sorted[hi] as number) - (sorted[lo] as number));
}

interface Accum {
  sum: number;
  sum2: number;
  count: number;
  seconds: number;
}

function summary(a: Accum): { perplexity: number; perplexityError: number; nll: number } {
  const mean = a.sum / a.count;
  const variance = Math.max(0, a.sum2 / a.count - mean * mean);
  const ppl = Math.exp(mean);
  return { perplexity: ppl, perplexityError: a.count > 1 ? ppl * Math.sqrt(variance / (a.count - 1)) : NaN, nll: mean };
}

/** Perplexity of `model` on `tokens` (and KL from options.base). */
export async function perplexity(model: Model, tokens: ArrayLike<number>, options: PerplexityOptions = {}): Promise<PerplexityResult> {
  const where = 'perplexity';
  const ids = model.tokens(tokens, where);
  const ctx = options.ctx ?? Math.min(512, model.contextSize);
  if (!Number.isInteger(ctx) || ctx < 4) fail(where, 'ERR_VALUE', `ctx must be an integer >= 4, got ${String(options.ctx)}`);
  const base = options.base;
  for (const m of base ? [model, base] : [model]) {
    if (ctx > m.contextSize) fail(where, 'ERR_VALUE', `ctx ${ctx} is longer than the context of ${m.path} (${m.contextSize} tokens; loadModel's contextSize, trained ${m.hyperparameters.contextLength})`);
  }
  if (base && base.hyperparameters.vocabSize !== model.hyperparameters.vocabSize) {
    fail(where, 'ERR_VALUE', `the base model's vocabulary (${base.hyperparameters.vocabSize}) differs from the model's (${model.hyperparameters.vocabSize})`);
  }
  const available = Math.floor(ids.length / ctx);
  const chunks = Math.min(options.chunks ?? available, available);
  if (!Number.isInteger(chunks) || chunks < 1) {
    fail(where, 'ERR_VALUE', `${ids.length} tokens do not make one chunk of ${ctx}; pass more tokens or a smaller ctx`);
  }
  const bos = options.bos === null ? undefined : options.bos ?? (model.addBos ? model.bosId : undefined);
  if (bos !== undefined) model.tokens([bos], where);
  const vocab = model.hyperparameters.vocabSize;
  const first = Math.floor(ctx / 2);
  const acc: Accum = { sum: 0, sum2: 0, count: 0, seconds: 0 };
  const baseAcc: Accum = { sum: 0, sum2: 0, count: 0, seconds: 0 };
  const kls: number[] = [];
  let agree = 0;
  const run = async (m: Model, chunk: Int32Array, a: Accum): Promise<Float32Array> => {
    const t0 = performance.now();
    const logits = await m.forward(chunk, { position: 0, logits: 'all', ...(options.signal ? { signal: options.signal } : {}) });
    a.seconds += (performance.now() - t0) / 1000;
    return logits;
  };
  // Logits at positions first .. ctx-2 predict tokens first+1 .. ctx-1: scored natively (log-softmax, KL) off the event loop.
  const rows = ctx - 1 - first;
  const nll = new Float64Array(rows);
  const baseNll = new Float64Array(rows);
  const kl = new Float64Array(rows);
  const sameTop = new Uint8Array(rows);
  for (let c = 0; c < chunks; c++) {
    const chunk = ids.slice(c * ctx, (c + 1) * ctx);
    if (bos !== undefined) chunk[0] = bos;
    const logits = await run(model, chunk, acc);
    const baseLogits = base ? await run(base, chunk, baseAcc) : undefined;
    await callAsync(where, () =>
      binding.modelScore(
        {
          rows,
          vocab,
          logits: logits.subarray(first * vocab, (ctx - 1) * vocab),
          targets: chunk.slice(first + 1, ctx),
          nll,
          threads: 0,
          ...(baseLogits ? { base: baseLogits.subarray(first * vocab, (ctx - 1) * vocab), baseNll, kl, sameTop } : {}),
          fresh: [nll, baseNll, kl, sameTop],
        },
        true,
      ),
    );
    for (let i = 0; i < rows; i++) {
      const v = nll[i] as number;
      acc.sum += v;
      acc.sum2 += v * v;
      acc.count++;
      if (baseLogits) {
        const bv = baseNll[i] as number;
        baseAcc.sum += bv;
        baseAcc.sum2 += bv * bv;
        baseAcc.count++;
        kls.push(kl[i] as number);
        agree += sameTop[i] as number;
      }
    }
    options.onProgress?.({ chunk: c + 1, chunks, perplexity: Math.exp(acc.sum / acc.count) });
  }
  const result: PerplexityResult = {
    ...summary(acc),
    count: acc.count,
    chunks,
    ctx,
    seconds: acc.seconds,
    tokensPerSecond: (chunks * ctx) / acc.seconds,
  };
  if (base) {
    const sorted = Float64Array.from(kls).sort();
    const b = summary(baseAcc);
    result.base = {
      ...b,
      tokensPerSecond: (chunks * ctx) / baseAcc.seconds,
      deltaPerplexity: result.perplexity - b.perplexity,
      kl: {
        mean: kls.reduce((a, k) => a + k, 0) / kls.length,
        p99: percentile(sorted, 0.99),
        median: percentile(sorted, 0.5),
        max: sorted[sorted.length - 1] as number,
        top1Agreement: agree / kls.length,
      },
    };
  }
  return result;
}

/** A compressed model's quality against its original on the same tokens (report --eval, the demo). */
export interface ModelEvaluation {
  /** The token file (when read from one) and its length. */
  tokens: { path?: string; count: number };
  ctx: number;
  chunks: number;
  /** Tokens scored per model. */
  scored: number;
  original: { path: string; perplexity: number; perplexityError: number; tokensPerSecond: number };
  compressed: { path: string; perplexity: number; perplexityError: number; tokensPerSecond: number };
  /** compressed − original perplexity. */
  deltaPerplexity: number;
  /** KL(original ‖ compressed) per scored token, and top-1 agreement. */
  kl: KlStats;
}

/** Evaluates `compressed` against `original` (the base) on `tokens`. */
export async function evaluateAgainst(compressed: Model, original: Model, tokens: ArrayLike<number>, options: Omit<PerplexityOptions, 'base'> & { tokensPath?: string } = {}): Promise<ModelEvaluation> {
  const { tokensPath, ...rest } = options;
  const r = await perplexity(compressed, tokens, { ...rest, base: original });
  const b = r.base as NonNullable<PerplexityResult['base']>;
  return {
    tokens: { ...(tokensPath !== undefined ? { path: tokensPath } : {}), count: tokens.length },
    ctx: r.ctx,
    chunks: r.chunks,
    scored: r.count,
    original: { path: original.path, perplexity: b.perplexity, perplexityError: b.perplexityError, tokensPerSecond: b.tokensPerSecond },
    compressed: { path: compressed.path, perplexity: r.perplexity, perplexityError: r.perplexityError, tokensPerSecond: r.tokensPerSecond },
    deltaPerplexity: b.deltaPerplexity,
    kl: b.kl,
  };
}

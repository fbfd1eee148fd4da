// An independent forward pass of a llama-family decoder in plain JS f64,
// written from Hugging Face transformers' modeling code (LlamaModel,
// Qwen2Model, Qwen3Model), not from slimtensor's: weights in Hugging Face
// layout (Q/K rows unpermuted), rotate_half RoPE, eager attention with a
// causal mask, SiLU-gated MLP. Tests compare the native runtime with it.
// Also llama.cpp's perplexity and KL-divergence rules, written here again.

export interface RefConfig {
  vocab: number;
  embd: number;
  layers: number;
  heads: number;
  headsKv: number;
  headDim: number;
  ff: number;
  eps: number;
  ropeBase: number;
  /** Positions are multiplied by this (linear scaling: 1 / factor). */
  ropePosScale?: number;
  /** Divisors of the inverse frequencies (llama3 scaling), one per pair. */
  ropeFactors?: ArrayLike<number>;
}

export interface RefLayer {
  inputNorm: Float64Array;
  q: Float64Array; // [heads*headDim, embd], Hugging Face row order
  k: Float64Array; // [headsKv*headDim, embd]
  v: Float64Array;
  o: Float64Array; // [embd, heads*headDim]
  postNorm: Float64Array;
  gate: Float64Array; // [ff, embd]
  up: Float64Array;
  down: Float64Array; // [embd, ff]
  qBias?: Float64Array;
  kBias?: Float64Array;
  vBias?: Float64Array;
  qNorm?: Float64Array; // [headDim]
  kNorm?: Float64Array;
}

export interface RefWeights {
  config: RefConfig;
  embed: Float64Array; // [vocab, embd]
  norm: Float64Array;
  head: Float64Array; // [vocab, embd] (the embedding when tied)
  layers: RefLayer[];
}

/**
 * llama.cpp's GGUF Q/K rows (convert_hf_to_gguf's permute: per head, row
 * 2i + h holds Hugging Face row h·d/2 + i) back to Hugging Face order.
 */
export function unpermuteQK<T extends Float32Array | Float64Array>(w: T, heads: number, cols: number): T {
  const rows = w.length / cols;
  const d = rows / heads;
  const out = (w instanceof Float32Array ? new Float32Array(w.length) : new Float64Array(w.length)) as T;
  for (let hd = 0; hd < heads; hd++) {
    for (let i = 0; i < d / 2; i++) {
      for (let h = 0; h < 2; h++) {
        const src = hd * d + 2 * i + h;
        const dst = hd * d + h * (d / 2) + i;
        out.set(w.subarray(src * cols, (src + 1) * cols) as ArrayLike<number>, dst * cols);
      }
    }
  }
  return out;
}

function rmsNorm(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i]! * x[i]!;
  const r = 1 / Math.sqrt(ss / x.length + eps);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = w[i]! * (x[i]! * r);
  return out;
}

/** y = W x for W [rows, cols] row-major. */
function matvec(w: Float64Array, x: Float64Array, rows: number, bias?: Float64Array): Float64Array {
  const cols = x.length;
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    const base = r * cols;
    for (let c = 0; c < cols; c++) s += w[base + c]! * x[c]!;
    y[r] = s + (bias ? bias[r]! : 0);
  }
  return y;
}

/** rotate_half RoPE (x·cos + rotate_half(x)·sin) on each head of v in place. */
function rope(v: Float64Array, heads: number, d: number, pos: number, c: RefConfig): void {
  const half = d / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      let invFreq = 1 / c.ropeBase ** ((2 * i) / d);
      if (c.ropeFactors) invFreq /= c.ropeFactors[i]!;
      const a = pos * (c.ropePosScale ?? 1) * invFreq;
      const cos = Math.cos(a);
      const sin = Math.sin(a);
      const x0 = v[h * d + i]!;
      const x1 = v[h * d + half + i]!;
      v[h * d + i] = x0 * cos - x1 * sin;
      v[h * d + half + i] = x1 * cos + x0 * sin;
    }
  }
}

/** Where a linear layer's input is taken (the runtime's activation sites). */
export type RefSite = 'attn_in' | 'attn_out' | 'ffn_in' | 'ffn_down' | 'head_in';

/**
 * Logits of every position of `tokens` (a fresh sequence from position 0);
 * `onLinearInput` sees each linear layer's input (layer -1: the head).
 */
export function referenceForward(w: RefWeights, tokens: readonly number[], onLinearInput?: (layer: number, site: RefSite, pos: number, x: Float64Array) => void): Float64Array[] {
  const c = w.config;
  const d = c.headDim;
  const group = c.heads / c.headsKv;
  const kCache: Float64Array[][] = w.layers.map(() => []);
  const vCache: Float64Array[][] = w.layers.map(() => []);
  const out: Float64Array[] = [];
  tokens.forEach((tok, pos) => {
    let x: Float64Array = w.embed.slice(tok * c.embd, (tok + 1) * c.embd);
    w.layers.forEach((L, l) => {
      const xn = rmsNorm(x, L.inputNorm, c.eps);
      onLinearInput?.(l, 'attn_in', pos, xn);
      const q = matvec(L.q, xn, c.heads * d, L.qBias);
      const k = matvec(L.k, xn, c.headsKv * d, L.kBias);
      const v = matvec(L.v, xn, c.headsKv * d, L.vBias);
      if (L.qNorm) for (let h = 0; h < c.heads; h++) q.set(rmsNorm(q.subarray(h * d, (h + 1) * d), L.qNorm, c.eps), h * d);
      if (L.kNorm) for (let h = 0; h < c.headsKv; h++) k.set(rmsNorm(k.subarray(h * d, (h + 1) * d), L.kNorm, c.eps), h * d);
      rope(q, c.heads, d, pos, c);
      rope(k, c.headsKv, d, pos, c);
      kCache[l]!.push(k);
      vCache[l]!.push(v);
      const att = new Float64Array(c.heads * d);
      for (let h = 0; h < c.heads; h++) {
        const g = Math.floor(h / group);
        const scores = kCache[l]!.map((kj) => {
          let s = 0;
          for (let i = 0; i < d; i++) s += q[h * d + i]! * kj[g * d + i]!;
          return s / Math.sqrt(d);
        });
        const mx = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - mx));
        const sum = e.reduce((a, b) => a + b, 0);
        vCache[l]!.forEach((vj, j) => {
          for (let i = 0; i < d; i++) att[h * d + i] += (e[j]! / sum) * vj[g * d + i]!;
        });
      }
      onLinearInput?.(l, 'attn_out', pos, att);
      const o = matvec(L.o, att, c.embd);
      const x1 = x.map((xi, i) => xi + o[i]!);
      const xn2 = rmsNorm(x1, L.postNorm, c.eps);
      onLinearInput?.(l, 'ffn_in', pos, xn2);
      const gt = matvec(L.gate, xn2, c.ff);
      const up = matvec(L.up, xn2, c.ff);
      const act = gt.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]!);
      onLinearInput?.(l, 'ffn_down', pos, act);
      const dn = matvec(L.down, act, c.embd);
      x = x1.map((xi, i) => xi + dn[i]!);
    });
    const xf = rmsNorm(x, w.norm, c.eps);
    onLinearInput?.(-1, 'head_in', pos, xf);
    out.push(matvec(w.head, xf, c.vocab));
  });
  return out;
}

/** -log softmax(logits)[token], in f64. */
export function nll(logits: ArrayLike<number>, token: number): number {
  let mx = -Infinity;
  for (let i = 0; i < logits.length; i++) mx = Math.max(mx, logits[i]!);
  let s = 0;
  for (let i = 0; i < logits.length; i++) s += Math.exp(logits[i]! - mx);
  return Math.log(s) + mx - logits[token]!;
}

/**
 * llama-perplexity's rule: chunks of ctx tokens (no overlap, the first
 * token of each replaced by BOS when given), the second half of each chunk
 * scored: logits at positions first..ctx-2 predict tokens first+1..ctx-1,
 * first = ctx/2. Returns exp(mean NLL) and the count scored.
 */
export function referencePerplexity(
  forward: (tokens: number[]) => ArrayLike<number>[],
  tokens: readonly number[],
  ctx: number,
  bos: number | undefined,
  maxChunks = Infinity,
): { ppl: number; count: number } {
  const chunks = Math.min(maxChunks, Math.floor(tokens.length / ctx));
  const first = Math.floor(ctx / 2);
  let sum = 0;
  let count = 0;
  for (let c = 0; c < chunks; c++) {
    const chunk = tokens.slice(c * ctx, (c + 1) * ctx);
    if (bos !== undefined) chunk[0] = bos;
    const logits = forward(chunk);
    for (let i = first; i < ctx - 1; i++) {
      sum += nll(logits[i]!, chunk[i + 1]!);
      count++;
    }
  }
  return { ppl: Math.exp(sum / count), count };
}

// Next-token choice from logits: greedy, or temperature / top-k / top-p
// sampling with a seeded generator (llama.cpp's order: top-k, then the
// temperature-scaled softmax, then top-p over the sorted candidates).
import { fail } from '../errors';

export interface SamplingOptions {
  /** 0: greedy (the largest logit, the lowest id on ties). Default 0.8. */
  temperature?: number;
  /** Keep the k most likely tokens (0: all). Default 40. */
  topK?: number;
  /** Keep the smallest set whose probability reaches p (1: all). Default 0.95. */
  topP?: number;
  /** Seed of the generator (an unsigned 32-bit integer). Default: random. */
  seed?: number;
}

/** The index of the largest value (the first on ties); NaN never wins. */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i] as number;
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}

/** A small, fast seeded generator (mulberry32): uniform in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Ids of the k largest logits (all when k is 0), largest first, lower ids first on ties; NaN skipped. */
export function topIds(logits: ArrayLike<number>, k: number): number[] {
  const n = logits.length;
  if (k <= 0 || k >= n) {
    const ids: number[] = [];
    for (let i = 0; i < n; i++) if (!Number.isNaN(logits[i] as number)) ids.push(i);
    return ids.sort((a, b) => (logits[b] as number) - (logits[a] as number) || a - b);
  }
  // One pass keeping the k best in order: most logits fall below the k-th and cost one comparison.
  const ids: number[] = [];
  for (let i = 0; i < n; i++) {
    const v = logits[i] as number;
    if (Number.isNaN(v)) continue;
    if (ids.length === k && !(v > (logits[ids[k - 1] as number] as number))) continue;
    let j = ids.length < k ? ids.length : k - 1;
    while (j > 0 && v > (logits[ids[j - 1] as number] as number)) j--;
    ids.splice(j, 0, i);
    if (ids.length > k) ids.pop();
  }
  return ids;
}

export interface Sampler {
  /** The next token for a row of logits. */
  next(logits: Float32Array): number;
}

/** Checks the options and returns a sampler (greedy when temperature is 0). */
export function createSampler(options: SamplingOptions, where: string): Sampler {
  const temperature = options.temperature ?? 0.8;
  const topK = options.topK ?? 40;
  const topP = options.topP ?? 0.95;
  if (typeof temperature !== 'number' || !(temperature >= 0) || !Number.isFinite(temperature)) fail(where, 'ERR_VALUE', `temperature must be a number >= 0, got ${String(temperature)}`);
  if (!Number.isInteger(topK) || topK < 0) fail(where, 'ERR_VALUE', `topK must be an integer >= 0, got ${String(topK)}`);
  if (typeof topP !== 'number' || !(topP > 0 && topP <= 1)) fail(where, 'ERR_VALUE', `topP must be in (0, 1], got ${String(topP)}`);
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 32);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) fail(where, 'ERR_VALUE', `seed must be an unsigned 32-bit integer, got ${String(seed)}`);
  if (temperature === 0 || topK === 1) return { next: (logits) => argmax(logits) };
  const random = seededRandom(seed);
  return {
    next(logits) {
      const kept = topIds(logits, topK);
      const max = logits[kept[0] as number] as number;
      const p = kept.map((i) => Math.exp(((logits[i] as number) - max) / temperature));
      const total = p.reduce((a, b) => a + b, 0);
      let cut = kept.length;
      let acc = 0;
      for (let i = 0; i < kept.length; i++) {
        acc += (p[i] as number) / total;
        if (acc >= topP) {
          cut = i + 1;
          break;
        }
      }
      const mass = p.slice(0, cut).reduce((a, b) => a + b, 0);
      let r = random() * mass;
      for (let i = 0; i < cut; i++) {
        r -= p[i] as number;
        if (r < 0) return kept[i] as number;
      }
      return kept[cut - 1] as number;
    },
  };
}

// An independent reader of compressed-tensors folders for the tests, written
// from the loaders' documented rules rather than from lib/:
//
// compressed-tensors (what transformers runs): config.json's
// quantization_config assigns each module a scheme unless `ignore` names it
// (exact name, or `re:` + a pattern matched at the start); among the
// config groups an exact name wins over a `re:` pattern, which wins over a
// class name ("Linear"). A module with a scheme is loaded from
// `<module>.weight_packed` (I32 [N, ceil(K·bits/32)]), `.weight_scale`
// ([N, groups]), `.weight_shape` (I64 [2]) and, asymmetric,
// `.weight_zero_point` (I32 [ceil(N·bits/32), groups]); every other module
// from `<module>.weight`. A tied head has no tensor of its own.
//
// vLLM: a Linear layer is ignored when its name (for a merged layer — qkv_proj,
// gate_up_proj — each shard's name, which must all agree) is in `ignore`;
// otherwise its scheme comes from the first target equal to (or `re:`
// matching) the layer name, else from a class target contained in the layer
// class name ("Linear" in "QKVParallelLinear"), else from the shards' names;
// a FusedMoE layer (all experts of a block) takes the "Linear" group. Layers
// vLLM builds without quantization (the head, MoE router gates) need their
// `.weight`. The WNA16 Marlin kernel needs N % 64 == 0 and K % 128 == 0 (a
// merged layer: N summed over its shards), group size -1/32/64/128, and
// zero points with 4-bit weights only; FusedMoE Marlin: hidden % 128 == 0
// and intermediate % max(64, group) == 0.
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { bf16ToF32, f16ToF32 } from '../../lib/half';

export type ModuleClass = 'Linear' | 'Embedding' | 'Conv1D' | 'LayerNorm' | 'RMSNorm';

/** A module of the model class as transformers builds it. */
export interface ModuleSpec {
  name: string;
  cls: ModuleClass;
  /** The weight as stored ([out, in] for Linear); undefined when tied to another module (no tensor of its own). */
  weight: number[] | undefined;
  bias?: number[];
}

export interface Scheme {
  bits: number;
  symmetric: boolean;
  /** -1: one group per row (channel). */
  groupSize: number;
}

interface Stored {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/** Every tensor of the folder's *.safetensors files, parsed by hand (8-byte length, JSON header, data). */
export function readTensors(dir: string): Map<string, Stored> {
  const out = new Map<string, Stored>();
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.safetensors')).sort()) {
    const buf = readFileSync(path.join(dir, f));
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    for (const [name, t] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      if (out.has(name)) throw new Error(`${name} stored twice`);
      const bytes = new Uint8Array(buf.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]));
      out.set(name, { dtype: t.dtype, shape: t.shape, bytes });
    }
  }
  return out;
}

type QC = {
  quant_method?: unknown;
  format?: unknown;
  quantization_status?: unknown;
  ignore?: unknown;
  config_groups?: Record<string, { targets?: unknown; weights?: { num_bits?: unknown; symmetric?: unknown; strategy?: unknown; group_size?: unknown } }>;
};

export function quantizationConfigOf(dir: string): QC | undefined {
  const cfg = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as { quantization_config?: QC };
  return cfg.quantization_config;
}

function matches(name: string, target: string): boolean {
  return target.startsWith('re:') ? new RegExp(`^(?:${target.slice(3)})`).test(name) : target === name;
}

function ignored(qc: QC, name: string): boolean {
  return Array.isArray(qc.ignore) && (qc.ignore as string[]).some((t) => matches(name, t));
}

function groups(qc: QC): { targets: string[]; scheme: Scheme }[] {
  return Object.values(qc.config_groups ?? {}).map((g) => {
    const w = g.weights ?? {};
    const channel = w.strategy === 'channel';
    return { targets: (g.targets as string[]) ?? [], scheme: { bits: Number(w.num_bits), symmetric: w.symmetric === true, groupSize: channel ? -1 : Number(w.group_size) } };
  });
}

/** compressed-tensors' scheme for a module: exact name, then `re:`, then class. */
function ctScheme(qc: QC, m: ModuleSpec): Scheme | undefined {
  if (ignored(qc, m.name)) return undefined;
  const gs = groups(qc);
  return (
    gs.find((g) => g.targets.includes(m.name))?.scheme ??
    gs.find((g) => g.targets.some((t) => t.startsWith('re:') && matches(m.name, t)))?.scheme ??
    gs.find((g) => g.targets.includes(m.cls))?.scheme
  );
}

function floats(t: Stored): Float32Array {
  const n = t.shape.reduce((a, d) => a * d, 1);
  const dv = new DataView(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = t.dtype === 'F32' ? dv.getFloat32(i * 4, true) : t.dtype === 'F16' ? f16ToF32(dv.getUint16(i * 2, true)) : bf16ToF32(dv.getUint16(i * 2, true));
  return out;
}

function same(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export interface CTReading {
  /** Everything a loader would trip over; empty when the folder loads. */
  problems: string[];
  /** The scheme each module loads with (undefined: dense `.weight`). */
  schemes: Map<string, Scheme | undefined>;
  /** Per quantized module, the largest |dequantized − original| in units of its group's scale. */
  errorInScales: Map<string, number>;
}

/**
 * Loads a folder as compressed-tensors does for `modules`; `originals` (the
 * weights as written to the input, by module) lets it check that the
 * dequantized weights are the originals to within half a step.
 */
export function readAsCompressedTensors(dir: string, modules: readonly ModuleSpec[], originals: ReadonlyMap<string, Float32Array> = new Map()): CTReading {
  const tensors = readTensors(dir);
  const qc = quantizationConfigOf(dir);
  const problems: string[] = [];
  const schemes = new Map<string, Scheme | undefined>();
  const errorInScales = new Map<string, number>();
  const expected = new Set<string>();
  if (qc !== undefined) {
    if (qc.quant_method !== 'compressed-tensors' || qc.format !== 'pack-quantized' || qc.quantization_status !== 'compressed') problems.push(`quantization_config: ${JSON.stringify([qc.quant_method, qc.format, qc.quantization_status])}`);
  }
  const want = (name: string, dtypes: string[], shape: number[]): Stored | undefined => {
    expected.add(name);
    const t = tensors.get(name);
    if (t === undefined) problems.push(`${name}: missing`);
    else if (!dtypes.includes(t.dtype) || !same(t.shape, shape)) problems.push(`${name}: ${t.dtype} [${t.shape.join(', ')}], expected ${dtypes.join('/')} [${shape.join(', ')}]`);
    else return t;
    return undefined;
  };
  for (const m of modules) {
    const scheme = qc === undefined ? undefined : ctScheme(qc, m);
    schemes.set(m.name, scheme);
    if (m.bias !== undefined) want(`${m.name}.bias`, ['F16', 'BF16', 'F32'], m.bias);
    if (scheme === undefined) {
      if (m.weight !== undefined) want(`${m.name}.weight`, ['F16', 'BF16', 'F32'], m.weight);
      continue;
    }
    if (m.weight === undefined) {
      problems.push(`${m.name}: tied (no tensor of its own) but matched by a scheme: compressed-tensors looks for ${m.name}.weight_packed`);
      continue;
    }
    if (m.cls !== 'Linear') problems.push(`${m.name}: a ${m.cls}, matched by a scheme`);
    const [n, k] = m.weight as [number, number];
    const g = scheme.groupSize === -1 ? k : scheme.groupSize;
    if (k % g !== 0) {
      problems.push(`${m.name}: group size ${g} does not divide ${k}`);
      continue;
    }
    const nGroups = k / g;
    const packed = want(`${m.name}.weight_packed`, ['I32'], [n, Math.ceil((k * scheme.bits) / 32)]);
    const scale = want(`${m.name}.weight_scale`, ['F16', 'BF16', 'F32'], [n, nGroups]);
    const shape = want(`${m.name}.weight_shape`, ['I64'], [2]);
    const zp = scheme.symmetric ? undefined : want(`${m.name}.weight_zero_point`, ['I32'], [Math.ceil((n * scheme.bits) / 32), nGroups]);
    if (tensors.has(`${m.name}.weight`)) problems.push(`${m.name}.weight: stored beside the packed weight`);
    if (shape !== undefined) {
      const dv = new DataView(shape.bytes.buffer, shape.bytes.byteOffset);
      if (Number(dv.getBigInt64(0, true)) !== n || Number(dv.getBigInt64(8, true)) !== k) problems.push(`${m.name}.weight_shape: not [${n}, ${k}]`);
    }
    const orig = originals.get(m.name);
    if (packed === undefined || scale === undefined || (!scheme.symmetric && zp === undefined) || orig === undefined) continue;
    // x ≈ (u − 2^(b−1) − z)·s, u the unsigned code of a row packed 32/b per int32 from the low bits; z packed the same way down the rows.
    const words = new Int32Array(packed.bytes.buffer, packed.bytes.byteOffset, packed.bytes.byteLength / 4);
    const zWords = zp === undefined ? undefined : new Int32Array(zp.bytes.buffer, zp.bytes.byteOffset, zp.bytes.byteLength / 4);
    const s = floats(scale);
    const per = 32 / scheme.bits;
    const mask = (1 << scheme.bits) - 1;
    const bias = 1 << (scheme.bits - 1);
    const rowWords = Math.ceil(k / per);
    let worst = 0;
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < k; c++) {
        const u = ((words[r * rowWords + Math.floor(c / per)] as number) >>> (scheme.bits * (c % per))) & mask;
        const gi = Math.floor(c / g);
        const z = zWords === undefined ? 0 : (((zWords[Math.floor(r / per) * nGroups + gi] as number) >>> (scheme.bits * (r % per))) & mask) - bias;
        const sc = s[r * nGroups + gi] as number;
        const x = (u - bias - z) * sc;
        worst = Math.max(worst, Math.abs(x - (orig[r * k + c] as number)) / sc);
      }
    }
    errorInScales.set(m.name, worst);
  }
  for (const name of tensors.keys()) if (!expected.has(name)) problems.push(`${name}: stored but no module loads it`);
  return { problems, schemes, errorInScales };
}

/** How vLLM builds the model's Linear layers. */
export interface VllmLayers {
  /** Merged layers (qkv_proj, gate_up_proj) by name, with their shard modules in order. */
  merged: Record<string, string[]>;
  /** FusedMoE layers by name, with their experts' gate, up and down modules. */
  fusedMoe: Record<string, { gateUp: string[]; down: string[] }>;
  /** Linear modules vLLM builds without quantization (the head, router gates): they need their `.weight`. */
  unquantized: string[];
}

function sameScheme(a: Scheme | undefined, b: Scheme | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.bits === b.bits && a.symmetric === b.symmetric && a.groupSize === b.groupSize);
}

function marlin(s: Scheme): string | undefined {
  if (![-1, 32, 64, 128].includes(s.groupSize)) return `group size ${s.groupSize}`;
  if (!s.symmetric && s.bits !== 4) return 'zero points with 8-bit weights';
  return undefined;
}

/**
 * The problems vLLM would have loading the folder and finding a WNA16
 * kernel; `reading` is readAsCompressedTensors' result (which tensors the
 * checkpoint holds for each module).
 */
export function readAsVllm(dir: string, modules: readonly ModuleSpec[], layers: VllmLayers, reading: CTReading): string[] {
  const qc = quantizationConfigOf(dir);
  const problems: string[] = [];
  const spec = new Map(modules.map((m) => [m.name, m]));
  const shape = (name: string): [number, number] => (spec.get(name)?.weight ?? [0, 0]) as [number, number];
  for (const u of layers.unquantized) if (reading.schemes.get(u) !== undefined) problems.push(`${u}: vLLM builds it unquantized, the checkpoint has it packed`);
  if (qc === undefined) return problems;
  const gs = groups(qc);
  const inMerged = new Set([...Object.values(layers.merged).flat(), ...Object.values(layers.fusedMoe).flatMap((e) => [...e.gateUp, ...e.down]), ...layers.unquantized]);
  const plain = modules.filter((m) => m.cls === 'Linear' && !inMerged.has(m.name)).map((m) => m.name);
  const check = (layer: string, shards: string[], vllmScheme: Scheme | undefined, n: number, k: number): void => {
    for (const s of shards) {
      if (!sameScheme(vllmScheme, reading.schemes.get(s))) problems.push(`${layer}: vLLM loads ${s} as ${JSON.stringify(vllmScheme ?? 'dense')}, the checkpoint holds ${JSON.stringify(reading.schemes.get(s) ?? 'dense')}`);
    }
    if (vllmScheme === undefined) return;
    const bad = marlin(vllmScheme);
    if (bad !== undefined) problems.push(`${layer}: Marlin takes no ${bad}`);
    if (n % 64 !== 0 || k % 128 !== 0) problems.push(`${layer}: Marlin needs [N % 64, K % 128] = 0, got [${n}, ${k}]`);
  };
  const targetScheme = (t: string | undefined): Scheme | undefined => (t === undefined ? undefined : gs.find((g) => g.targets.includes(t))?.scheme);
  const byName = (name: string): string | undefined => gs.flatMap((g) => g.targets).find((t) => t !== 'Linear' && matches(name, t));
  const classTarget = gs.flatMap((g) => g.targets).find((t) => t === 'Linear');
  for (const name of plain) {
    const [n, k] = shape(name);
    check(name, [name], ignored(qc, name) ? undefined : targetScheme(byName(name) ?? classTarget), n, k);
  }
  for (const [layer, shards] of Object.entries(layers.merged)) {
    const ig = shards.map((s) => ignored(qc, s));
    if (new Set(ig).size > 1) {
      problems.push(`${layer}: vLLM requires all of ${shards.join(', ')} ignored or none (ValueError)`);
      continue;
    }
    let t = ig[0] ? undefined : (byName(layer) ?? classTarget);
    if (!ig[0] && t === undefined) {
      const each = shards.map(byName);
      t = each.every((x) => x !== undefined) ? each[0] : undefined;
    }
    const n = shards.reduce((a, s) => a + shape(s)[0], 0);
    check(layer, shards, ig[0] ? undefined : targetScheme(t), n, shape(shards[0] as string)[1]);
  }
  for (const [layer, e] of Object.entries(layers.fusedMoe)) {
    const all = [...e.gateUp, ...e.down];
    const ig = ignored(qc, layer) || all.every((s) => ignored(qc, s));
    const scheme = ig ? undefined : targetScheme('Linear');
    for (const s of all) if (!sameScheme(scheme, reading.schemes.get(s))) problems.push(`${layer}: FusedMoE loads ${s} as ${JSON.stringify(scheme ?? 'dense')}, the checkpoint holds ${JSON.stringify(reading.schemes.get(s) ?? 'dense')}`);
    if (scheme === undefined) continue;
    const [inter, hidden] = shape(e.gateUp[0] as string);
    const bad = marlin(scheme);
    if (bad !== undefined) problems.push(`${layer}: Marlin takes no ${bad}`);
    if (hidden % 128 !== 0 || inter % Math.max(64, scheme.groupSize) !== 0) problems.push(`${layer}: MoE Marlin needs hidden % 128 and intermediate % max(64, group) = 0`);
  }
  return problems;
}

// Which tensors are the weights of Linear layers, for compressed-tensors
// outputs. Their consumers apply a quantization scheme by module class
// ("Linear") and name, not by tensor name: every module a scheme matches
// must have its packed tensors, every other module its `.weight`, and a
// Linear left unquantized (the head, tied or not; a router gate; a layer no
// kernel runs) must be listed in `ignore`. The model's modules come from
// lib/model/architectures.ts (the table the runtime and the converter use),
// or from a conservative rule by name when the architecture is not in it.
import { SlimTensorError } from '../errors';
import { marlinShapeProblem, modulePrefix, schemeKey, schemeOfOptions, type CTScheme } from '../formats/compressed-tensors';
import { findArchitectureOfHfClass, genericTensorKind, headRole, resolveTensor, SUPPORTED_GGUF_ARCHITECTURES, vllmMergedLayer, ARCHITECTURES, type Architecture, type TensorKind, type TensorRole } from '../model/architectures';
import { describeAction, type PlanInput, type Target, type TensorAction, type TensorPlan } from './recipe';
import type { ModelSource } from './source';

/** What a tensor is in the model: its module, and whether that module is a quantizable Linear. */
export interface ModuleOfTensor {
  /** The tensor's kind from the table or the conservative rule; undefined: not recognised. */
  kind: TensorKind | undefined;
  /** The module (the tensor name without `.weight`). */
  module: string;
  /** The vLLM merged layer it loads into (linear modules only). */
  merged: string | undefined;
}

export interface ModelModules {
  /** config.json `architectures[0]` or GGUF `general.architecture`, when the input names one. */
  architecture: string | undefined;
  /** The architecture table decides (else: the conservative rule). */
  table: boolean;
  /** The output head module, listed in `ignore` whether or not its tensor is stored (tied embeddings). */
  head: string;
  of(name: string): ModuleOfTensor;
}

/** The modules of a model, from its architecture (config.json for folders, general.architecture for GGUF). */
export function modelModules(source: ModelSource, config: Record<string, unknown> | undefined): ModelModules {
  const naming = source.format === 'gguf' ? 'gguf' : 'hf';
  let architecture: string | undefined;
  let arch: Architecture | undefined;
  if (naming === 'gguf') {
    architecture = source.gguf?.architecture;
    if (architecture !== undefined && SUPPORTED_GGUF_ARCHITECTURES.includes(architecture)) arch = ARCHITECTURES[architecture];
  } else {
    const classes = config?.architectures;
    const first = Array.isArray(classes) ? (classes[0] as unknown) : undefined;
    architecture = typeof first === 'string' ? first : undefined;
    if (architecture !== undefined) arch = findArchitectureOfHfClass(architecture);
  }
  const head = modulePrefix(headRole(arch)[naming]);
  return {
    architecture,
    table: arch !== undefined,
    head,
    of(name) {
      let role: TensorRole | undefined;
      let kind: TensorKind | undefined;
      if (arch !== undefined) {
        role = resolveTensor(arch, name, naming)?.role;
        kind = role?.kind;
      } else {
        const g = genericTensorKind(name, naming);
        role = g?.role;
        kind = g?.kind;
      }
      const module = modulePrefix(name);
      return { kind, module, merged: kind === 'linear' ? vllmMergedLayer(module, role) : undefined };
    },
  };
}

/** The compressed-tensors side of a plan: which modules stay Linear-but-unquantized, and what was kept. */
export interface ModulePlan {
  plans: TensorPlan[];
  /** Every Linear module left unquantized (the head always), for quantization_config.ignore. */
  ignore: string[];
  /** Quantized modules vLLM loads as shards of a merged layer. */
  mergedShards: Set<string>;
  /** 2-D tensors written as they were, and why. */
  kept: { name: string; shape: number[]; reason: string }[];
}

function compressedTensorsWeight(a: TensorAction): boolean {
  return a.kind === 'quantize' || (a.kind === 'prune' && a.sparse24);
}

function notLinear(m: ModuleOfTensor, modules: ModelModules): string {
  const where = modules.table ? '' : ` (${modules.architecture ?? 'the model'} is not in the architecture table: conservative rule by name)`;
  if (m.kind === 'head') return `the output head stays dense and is listed in ignore, as llm-compressor does${where}`;
  if (m.kind === 'embedding') return `an embedding, not a Linear layer: compressed-tensors quantizes Linear layers${where}`;
  return `not a Linear layer of an attention or MLP block${where}: its consumers would look for its .weight`;
}

/**
 * Adjusts the per-tensor plans of a compressed-tensors output to the
 * model's modules: only Linear weights of attention and MLP blocks are
 * quantized (or stored as sparse-24-bitmask), and for target 'vllm' each
 * layer — a merged layer as a whole — either fits the Marlin kernel or is
 * kept. Throws ERR_VALUE when a recipe treats the shards of one vLLM merged
 * layer differently.
 */
export function planModules(inputs: readonly PlanInput[], plans: readonly TensorPlan[], modules: ModelModules, target: Target): ModulePlan {
  const out = plans.slice();
  const mods = inputs.map((t) => modules.of(t.name));
  for (let i = 0; i < out.length; i++) {
    const p = out[i] as TensorPlan;
    const m = mods[i] as ModuleOfTensor;
    if (m.kind === 'linear' || !compressedTensorsWeight(p.action)) continue;
    const reason = notLinear(m, modules);
    out[i] = p.action.kind === 'prune' ? { ...p, action: { ...p.action, sparse24: false, dense: `${reason}: the pruned tensor is written dense` } } : { ...p, action: { kind: 'keep', reason } };
  }

  const keptGroups: string[] = [];
  if (target === 'vllm') {
    // One decision per vLLM layer: a merged layer's shards together, other Linear modules alone.
    const layers = new Map<string, number[]>();
    for (let i = 0; i < out.length; i++) {
      const m = mods[i] as ModuleOfTensor;
      if (m.kind !== 'linear' || (inputs[i] as PlanInput).shape.length !== 2) continue;
      const key = m.merged ?? m.module;
      layers.set(key, [...(layers.get(key) ?? []), i]);
    }
    for (const [layer, members] of layers) {
      const quantized = members.filter((i) => (out[i] as TensorPlan).action.kind === 'quantize');
      if (quantized.length === 0) continue;
      const label = layer.endsWith('.experts')
        ? `vLLM's FusedMoE layer '${layer}'`
        : members.length > 1
          ? `vLLM's merged layer '${layer}' (${members.map((i) => (mods[i] as ModuleOfTensor).module.split('.').pop()).join(', ')})`
          : `'${layer}'`;
      if (quantized.length !== members.length) {
        const other = members.find((i) => !quantized.includes(i)) as number;
        throw new SlimTensorError(
          `target 'vllm': ${label} must be quantized as one: '${(inputs[other] as PlanInput).name}' is ${describeAction((out[other] as TensorPlan).action, (inputs[other] as PlanInput).storage)} while '${(inputs[quantized[0] as number] as PlanInput).name}' is quantized; give the shards one rule, or use target 'transformers'`,
          'ERR_VALUE',
        );
      }
      const schemes = members.map((i) => {
        const o = ((out[i] as TensorPlan).action as Extract<TensorAction, { kind: 'quantize' }>).options;
        const scheme = schemeOfOptions(o);
        return { scheme, key: `${schemeKey(scheme)}:${o.scaleDtype}` };
      });
      if (new Set(schemes.map((s) => s.key)).size > 1) {
        throw new SlimTensorError(`target 'vllm': ${label} needs one quantization scheme for all its shards; the recipe gives ${members.map((i) => `'${(inputs[i] as PlanInput).name}' ${describeAction((out[i] as TensorPlan).action, '')}`).join(', ')}`, 'ERR_VALUE');
      }
      const scheme = (schemes[0] as { scheme: CTScheme }).scheme;
      let reason: string | undefined;
      if (layer.endsWith('.experts')) {
        // FusedMoE: each expert projection alone (which implies vLLM's MoE
        // Marlin rule, hidden % 128 and intermediate % max(64, group)).
        for (const i of members) {
          const [n, k] = (inputs[i] as PlanInput).shape as [number, number];
          const problem = marlinShapeProblem(n, k, scheme);
          if (problem !== undefined) {
            reason = `${problem} (${label}: '${(inputs[i] as PlanInput).name}' is [${n}, ${k}])`;
            break;
          }
        }
      } else {
        const ks = new Set(members.map((i) => (inputs[i] as PlanInput).shape[1]));
        const n = members.reduce((s, i) => s + ((inputs[i] as PlanInput).shape[0] as number), 0);
        const k = (inputs[members[0] as number] as PlanInput).shape[1] as number;
        const problem = ks.size > 1 ? `its shards have different input sizes (${[...ks].join(', ')})` : marlinShapeProblem(n, k, scheme);
        if (problem !== undefined) reason = `${problem}${members.length > 1 ? ` (${label} is [${n}, ${k}])` : ''}`;
      }
      if (reason === undefined) continue;
      for (const i of members) {
        const p = out[i] as TensorPlan;
        const t = inputs[i] as PlanInput;
        out[i] = { ...p, action: { kind: 'keep', reason: `kept for vLLM: ${reason}` }, fallback: { from: describeAction(p.action, t.storage), to: `${t.storage} (kept)`, reason } };
      }
      if (layer.endsWith('.experts')) keptGroups.push(layer);
    }
  }

  // ignore: every Linear that is not stored as compressed-tensors weights —
  // the quantizable ones kept, 2-D weights the rule does not recognise (a
  // router gate is a Linear; a name in ignore that is no Linear is
  // harmless), vLLM's FusedMoE layers kept whole, and the head last,
  // whether or not its tensor is stored.
  const ignore: string[] = [];
  const kept: ModulePlan['kept'] = [];
  const mergedShards = new Set<string>();
  for (let i = 0; i < out.length; i++) {
    const t = inputs[i] as PlanInput;
    const m = mods[i] as ModuleOfTensor;
    const a = (out[i] as TensorPlan).action;
    if (compressedTensorsWeight(a)) {
      if (m.merged !== undefined) mergedShards.add(m.module);
      continue;
    }
    if (t.shape.length !== 2) continue;
    if (a.kind === 'keep' || a.kind === 'convert') kept.push({ name: t.name, shape: t.shape.slice(), reason: a.reason });
    const linearLike = m.kind === 'linear' || (m.kind === undefined && t.name.endsWith('.weight'));
    if (linearLike && m.module !== modules.head) ignore.push(m.module);
  }
  ignore.push(...keptGroups, modules.head);
  return { plans: out, ignore: [...new Set(ignore)], mergedShards, kept };
}

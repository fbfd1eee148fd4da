// convertModel: a Hugging Face folder (or a GGUF file) to a GGUF file at one
// output type, the job of llama.cpp's convert_hf_to_gguf.py --outtype. The
// pipeline does the work (compressModel with a recipe per output type), so
// conversion streams with the same bounded memory; a quantizing preset
// (q4_0, ...) given to compressModel converts and quantizes in one pass.
import { compressModel, type CompressOptions, type CompressReport } from '../pipeline/compress';
import { NORM_GLOBS, PRESETS, type Recipe } from '../pipeline/recipe';
import { fail } from '../errors';

/**
 * What the weights become: f32, f16 (llama.cpp's default), bf16, q8_0 (every
 * matrix), or auto (each tensor keeps its stored f32 / f16 / bf16 type).
 * Norms, biases and rope_freqs are F32 whatever the type, as llama.cpp
 * writes them.
 */
export type OutType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'auto';
export const OUT_TYPES: readonly OutType[] = ['f32', 'f16', 'bf16', 'q8_0', 'auto'];

/** The recipe of one output type. */
export function convertRecipe(outtype: OutType): Recipe {
  if (!OUT_TYPES.includes(outtype)) fail('convertRecipe', 'ERR_VALUE', `outtype must be one of ${OUT_TYPES.join(', ')}; got ${JSON.stringify(outtype)}`);
  if (outtype === 'q8_0') return { ...(PRESETS.q8_0 as Recipe), name: 'convert q8_0' };
  return {
    name: `convert ${outtype}`,
    description: outtype === 'auto' ? 'GGUF, every matrix in its stored type (f32, f16 or bf16); norms, biases and rope_freqs F32' : `GGUF, every matrix ${outtype.toUpperCase()}; norms, biases and rope_freqs F32`,
    format: 'gguf',
    rules: [
      { match: [...NORM_GLOBS, '*.bias', 'rope_freqs.weight'], method: 'keep' },
      { match: '*', method: 'keep', options: outtype === 'auto' ? {} : { dtype: outtype } },
    ],
  };
}

/**
 * Tensor buffers a conversion holds by default: it is bound by the disk, not
 * by the cast, so half of compressModel's default keeps a 7B conversion's
 * peak resident set well under 1 GiB at the same speed.
 */
export const CONVERT_MEMORY_LIMIT = 512 * 1024 * 1024;

export interface ConvertOptions extends Omit<CompressOptions, 'recipe' | 'format' | 'target' | 'maxShardBytes'> {
  /** Default 'f16', as llama.cpp's converter. (memoryLimit defaults to CONVERT_MEMORY_LIMIT.) */
  outtype?: OutType;
}

/** Converts a Hugging Face folder (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM) to a GGUF file llama.cpp loads. */
export async function convertModel(options: ConvertOptions): Promise<CompressReport> {
  if (typeof options !== 'object' || options === null) fail('convertModel', 'ERR_VALUE', 'options must be an object');
  const { outtype, ...rest } = options;
  return compressModel({ ...rest, memoryLimit: rest.memoryLimit ?? CONVERT_MEMORY_LIMIT, recipe: convertRecipe(outtype ?? 'f16'), format: 'gguf' });
}

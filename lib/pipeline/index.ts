// Model-level compression: recipes, streaming over model files, reports.
export { compressModel, type CompressOptions, type CompressProgress, type CompressReport, type StageTimes, type TensorRecord } from './compress';
export { statsNeeded, type CalibrationRecord } from './calibration';
export {
  PRESETS,
  PRESET_NAMES,
  OUTPUT_FORMATS,
  TARGETS,
  PRUNE_LAYOUTS,
  pruneRecipe,
  resolveRecipe,
  planTensor,
  METHOD_STATS,
  wandaNorms,
  asvdScale,
  type Recipe,
  type RecipeRule,
  type RecipeMethod,
  type OutputFormat,
  type ResolvedRecipe,
  type TensorPlan,
  type TensorAction,
  type PruneScore,
  type Target,
  type PruneLayout,
  type PlanContext,
  type ImportanceSource,
  type CalibrationSpec,
} from './recipe';
export { GGUF_MIXES, MIX_NAMES, planMix, mixModelOf, llamaQuantizeOrder, type MixName, type MixInfo, type MixModel, type MixChoice } from './gguf-mix';
export { openModel, type ModelSource, type SourceTensor, type SourceFormat } from './source';

export { SlimTensorError, type ErrorCode } from './errors';
export { Tensor, dtypeSize, type DType, type TensorData } from './tensor';
export { backends, setThreads, getThreads, type Backends } from './backend';
export {
  quantize,
  quantizeSync,
  dequantize,
  dequantizeSync,
  quantizationError,
  quantizationErrorSync,
  QuantizedTensor,
  QUANT_FORMATS,
  GGML_QUANT_FORMATS,
  ggmlBlockSize,
  type QuantFormat,
  type QuantizeOptions,
  type DequantizeOptions,
  type QuantizationError,
  type QuantizedTensorParts,
  type FloatDType,
  type Kernel,
} from './quantize';
export { gptq, gptqSync, GPTQ_FORMATS, type GptqOptions, type GptqStats, type GptqResult } from './gptq';
export { applyTensorScale, awqFold, awqGroups, awqScales, awqSearch, type AwqGroup, type AwqInputStats, type AwqSearchOptions, type AwqSearchResult, type AwqSkipped, type TensorScale } from './calibrate/awq';
export {
  ActivationStatsCollector,
  calibrate,
  calibrationChunks,
  calibrateSequential,
  type CalibrateSequentialOptions,
  type SequentialBlock,
  type ActivationStats,
  type ActivationStatsCollectorOptions,
  type LayerInputStats,
  type CalibrateOptions,
  type CalibrationChunkOptions,
} from './calibrate';
export {
  GGUFReader,
  GGUF_LIMITS,
  GGML_TYPES,
  type GGUFOpenOptions,
  type GGUFMetadataEntry,
  type GGUFTensorInfo,
  type GGUFValue,
  type GGUFArrayValue,
  type GGMLTypeInfo,
  type GGMLTypeName,
  type GGUFValueTypeName,
} from './formats/gguf';
export { f32ToF16, f16ToF32, f32ToBf16, bf16ToF32 } from './half';
export { cast, castSync, type CastOptions } from './cast';
export {
  matmul,
  matmulSync,
  svd,
  svdSync,
  lowRank,
  lowRankSync,
  type LowRankKernel,
  type MatmulOptions,
  type SvdOptions,
  type SvdResult,
  type LowRankOptions,
  type LowRankResult,
  type Whitening,
} from './lowrank';
export {
  prune,
  pruneSync,
  pruneUnstructured,
  pruneUnstructuredSync,
  compress24,
  compress24Sync,
  decompress24,
  decompress24Sync,
  spmm24,
  spmm24Sync,
  spmm24Kernel,
  Sparse24Tensor,
  type SparsityScore,
  type PruneOptions,
  type PruneResult,
  type Compress24Options,
  type Decompress24Options,
  type Spmm24Options,
  type PruneUnstructuredOptions,
  type UnstructuredResult,
  type Sparse24Parts,
} from './sparsity';
export {
  distillLoss,
  distillLossSync,
  type DistillLossOptions,
  type DistillLossResult,
  type Divergence,
  type Reduction,
  type TopKTeacher,
  type Labels,
} from './distill';
export {
  SafetensorsFile,
  SafetensorsModel,
  SafetensorsWriter,
  ShardedSafetensorsWriter,
  SAFETENSORS_DTYPES,
  SAFETENSORS_LIMITS,
  type SafetensorsDType,
  type SafetensorsTensorInfo,
  type SafetensorsModelTensor,
  type PlannedTensor,
  type ReadTensorOptions,
  type ShardOptions,
} from './formats/safetensors';
export { GGUFWriter, GGUF_FILE_TYPES, type GGUFPlannedTensor, type GGUFWriterPlan } from './formats/gguf-writer';
export type { GGUFReadOptions } from './formats/gguf';
export {
  readImatrix,
  parseImatrixDat,
  imatrixWeights,
  writeImatrix,
  imatrixDatBytes,
  type ImportanceMatrix,
  type ImatrixEntry,
  type ImatrixReadOptions,
  type ImatrixData,
  type ImatrixWriteOptions,
} from './formats/imatrix';
export {
  compressModel,
  PRESETS,
  PRESET_NAMES,
  pruneRecipe,
  resolveRecipe,
  openModel,
  type CompressOptions,
  type CompressProgress,
  type CompressReport,
  type StageTimes,
  type TensorRecord,
  type Recipe,
  type RecipeRule,
  type RecipeMethod,
  type OutputFormat,
  type Target,
  type PruneLayout,
  type CalibrationSpec,
  type CalibrationRecord,
  GGUF_MIXES,
  MIX_NAMES,
  type MixName,
} from './pipeline/index';
export { compareModels, type ComparisonReport, type TensorComparison, type CompareOptions } from './pipeline/compare';
export { renderReportHtml } from './pipeline/html';
// BullMQ and ioredis load on first use of the queue, not with slimtensor.
export {
  CompressionQueue,
  enqueueCompression,
  createWorker,
  DEFAULT_QUEUE,
  type CompressionRequest,
  type CompressionProgress,
  type CompressionResult,
  type CompressionWorker,
  type WorkerOptions,
  type EnqueueOptions,
  type EnqueuedJob,
  type JobOutcome,
  type WaitOptions,
  type QueueLocation,
} from './queue/index';
export {
  Tokenizer,
  tokenizerFromGguf,
  tokenizerFromHfFolder,
  TOKEN_TYPES,
  type EncodeOptions,
  type DecodeOptions,
  type TokenizerModel,
} from './model/tokenizer';
export { ggufTokenizerMetadata, type TokenizerMetadataOptions } from './convert/tokenizer-metadata';
export {
  loadModel,
  Model,
  ModelBlock,
  ACTIVATION_SITES,
  type LoadModelOptions,
  type ModelBlockOptions,
  type ModelBlockRunOptions,
  type BlockWeight,
  type ForwardOptions,
  type GenerateOptions,
  type GeneratedToken,
  type ActivationBatch,
  type ActivationSite,
  type LinearInfo,
} from './model/model';
export { perplexity, evaluateAgainst, type PerplexityOptions, type PerplexityResult, type ModelEvaluation, type KlStats } from './model/evaluate';
export { readTokenFile, writeTokenFile } from './model/tokens';
export { linear, linearSync, linearKernel, type LinearOptions } from './model/linear';
export type { SamplingOptions } from './model/sampling';
export {
  ARCHITECTURES,
  SUPPORTED_GGUF_ARCHITECTURES,
  SUPPORTED_HF_CLASSES,
  type Architecture,
  type Hyperparameters,
} from './model/architectures';
export { convertModel, convertRecipe, OUT_TYPES, type ConvertOptions, type OutType } from './convert/convert-model';

// Batch compression across machines: a BullMQ job queue on Redis.
export { CompressionQueue, enqueueCompression, type EnqueueOptions, type EnqueuedJob, type JobOutcome, type WaitOptions } from './submit';
export { createWorker, type CompressionWorker, type WorkerOptions } from './worker';
export { DEFAULT_QUEUE, type CompressionRequest, type CompressionProgress, type CompressionResult } from './job';
export type { QueueLocation } from './connection';

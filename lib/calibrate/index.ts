// Calibration: activation statistics for the activation-aware methods.
export { ActivationStatsCollector, type ActivationStats, type ActivationStatsCollectorOptions, type LayerInputStats } from './stats';
export { calibrate, calibrationChunks, type CalibrateOptions, type CalibrationChunkOptions } from './calibrate';
export { calibrateSequential, type CalibrateSequentialOptions, type SequentialBlock } from './sequential';

import { fail } from './errors';
import { binding } from './native';

/** What this process can run on. */
export interface Backends {
  cpu: {
    /** Instruction-set extensions the CPU offers. */
    features: string[];
    /**
     * The kernel family in use: 'avx2'; 'avx512' (the AVX2 kernels, with
     * AVX-512 loops where they exist: the MSE search); or 'scalar' (the
     * reference). SLIMTENSOR_ISA=avx2|scalar caps it.
     */
    kernel: 'avx512' | 'avx2' | 'scalar';
    /** Threads each operation uses (setThreads / SLIMTENSOR_THREADS). */
    threads: number;
    hardwareThreads: number;
  };
  cuda: {
    /** This build contains CUDA kernels (npm run build:cuda). */
    compiled: boolean;
    /** A device is usable now. */
    available: boolean;
    /** Why not, when unavailable. */
    reason?: string;
    /**
     * The GPU SVD of lowRank()/svd(): libcusolver loaded at run time
     * (dlopen), so its absence never stops the addon from loading. When
     * unavailable, `reason` says why and kernel 'auto' runs on the CPU.
     */
    cusolver?: { available: boolean; reason?: string; library?: string };
  };
  /**
   * How async calls keep the buffers they use from moving while a kernel
   * runs (README, "Buffers and async calls"): 'mark' reads and writes them
   * in place and marks them untransferable; 'copy' works on private copies
   * (where this runtime's ArrayBuffer.prototype.transfer ignores the mark,
   * or SLIMTENSOR_ASYNC_BUFFERS=copy). `reason` says which.
   */
  buffers: { async: 'mark' | 'copy'; reason: string };
}

/** Reports the CPU features in use and whether CUDA is available (and why not). */
export function backends(): Backends {
  return binding.backends();
}

/**
 * Sets how many threads each operation uses (including the calling
 * thread). 0 restores the default: SLIMTENSOR_THREADS, else all cores.
 * Process-wide: worker_threads share the same pool.
 */
export function setThreads(n: number): void {
  if (!Number.isInteger(n) || n < 0 || n > 1024) fail('setThreads', 'ERR_VALUE', `n must be an integer in 0..1024, got ${String(n)}`);
  binding.setThreads(n);
}

/** Threads each operation uses now. */
export function getThreads(): number {
  return binding.getThreads();
}

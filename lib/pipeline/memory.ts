// Buffers the pipeline holds, under a byte limit. Tensor inputs and outputs
// are taken from a pool that reuses freed ArrayBuffers (fresh memory costs
// page faults and, when it is garbage, waits for the GC), and a gate admits
// a tensor into the pipeline only when its bytes fit under the limit. The
// pool's accounting (bytes in use + bytes kept for reuse) is what the
// memory bound is stated in, and what the tests check.
import { uninitializedArray } from '../tensor';

const ALIGN = 4096;

/** The bytes the pool sets aside for a request of n bytes (whole 4 KiB pages). */
export function poolSize(n: number): number {
  return Math.max(ALIGN, Math.ceil(n / ALIGN) * ALIGN);
}

export class BufferPool {
  /** Bytes of buffers handed out and not yet released. */
  inUse = 0;
  /** Bytes of released buffers kept for reuse. */
  retained = 0;
  /** Largest inUse + retained seen. */
  peak = 0;
  /** Buffers allocated (not reused). */
  allocations = 0;
  private readonly free: Uint8Array[] = [];

  constructor(readonly limit: number) {}

  /**
   * A buffer of at least n bytes (its first n bytes are returned as a view
   * at offset 0 of its own ArrayBuffer, so any typed view is aligned). Its
   * contents are unspecified.
   */
  acquire(n: number): Uint8Array {
    // Reuse only a buffer of exactly this size class: the bytes in use then
    // equal the bytes the gate admitted (blocks of a model repeat their
    // shapes, so exact reuse is the common case).
    const size = poolSize(n);
    // The most recently released first: its memory is the likeliest to be
    // still in the cache (bands of one tensor cycle through a few buffers).
    let i = this.free.length - 1;
    while (i >= 0 && (this.free[i] as Uint8Array).byteLength !== size) i--;
    let buf: Uint8Array;
    if (i >= 0) {
      buf = this.free.splice(i, 1)[0] as Uint8Array;
      this.retained -= size;
    } else {
      // Make room: drop kept buffers (largest first) until the new one fits the limit.
      this.free.sort((a, b) => a.byteLength - b.byteLength);
      while (this.free.length > 0 && this.inUse + this.retained + size > this.limit) {
        const dropped = this.free.pop() as Uint8Array;
        this.retained -= dropped.byteLength;
      }
      buf = uninitializedArray(Uint8Array, size);
      this.allocations++;
    }
    this.inUse += buf.byteLength;
    this.peak = Math.max(this.peak, this.inUse + this.retained);
    const view = buf.subarray(0, n);
    this.owner.set(view, buf);
    return view;
  }

  private readonly owner = new WeakMap<Uint8Array, Uint8Array>();

  /** Gives a buffer from acquire() back. Kept for reuse while under the limit. */
  release(view: Uint8Array): void {
    const buf = this.owner.get(view);
    if (buf === undefined) return;
    this.owner.delete(view);
    this.inUse -= buf.byteLength;
    if (this.inUse + this.retained + buf.byteLength <= this.limit) {
      this.free.push(buf);
      this.retained += buf.byteLength;
    }
  }

  /** Drops every kept buffer. */
  clear(): void {
    this.free.length = 0;
    this.retained = 0;
  }
}

/**
 * Admits work whose byte cost fits under a limit: acquire(n) waits until
 * the bytes admitted plus n fit (or nothing is admitted: a tensor larger
 * than the limit runs alone) and fewer than maxJobs are in flight.
 */
export class Gate {
  private bytes = 0;
  private jobs = 0;
  private waiters: (() => void)[] = [];

  constructor(
    private readonly limit: number,
    private readonly maxJobs: number,
  ) {}

  private fits(n: number): boolean {
    return this.jobs === 0 || (this.jobs < this.maxJobs && this.bytes + n <= this.limit);
  }

  /** Resolves when `n` bytes are admitted, or when `cancelled()` turns true (then nothing is admitted and false is returned). */
  async acquire(n: number, cancelled: () => boolean): Promise<boolean> {
    while (!this.fits(n)) {
      if (cancelled()) return false;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    if (cancelled()) return false;
    this.bytes += n;
    this.jobs++;
    return true;
  }

  release(n: number): void {
    this.bytes -= n;
    this.jobs--;
    this.wake();
  }

  /** Lets waiters re-check (e.g. after an abort). */
  wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

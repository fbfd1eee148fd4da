// A file written front to back, as the GGUF and safetensors writers write
// theirs. Large files go around the page cache (O_DIRECT) where the
// platform and the filesystem allow it: a buffered write copies every byte
// into freshly allocated page-cache pages, and on a virtual machine whose
// host hands memory out lazily that costs more CPU than quantizing the
// bytes did (2.4 s of system time per GB on the project's VM, against
// 0.15 s for the same bytes written direct). Bytes are gathered into two
// aligned staging buffers; one is written while the other fills, so the
// disk works while the pipeline computes. The last partial block is
// written padded and the file cut back to its size.
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import { SlimTensorError } from '../errors';
import { binding } from '../native';

/** What O_DIRECT asks of buffers, offsets and lengths (every block size in use divides it). */
const BLOCK = 4096;
/** Bytes per direct write: large enough for the disk's full rate (8 MiB and up measured the same). */
const CHUNK = 8 * 1024 * 1024;
/** Files planned smaller than this are written through the page cache (O_DIRECT's synchronous writes would cost more than they save). */
export const DIRECT_MIN_BYTES = 64 * 1024 * 1024;

export interface OutputFileOptions {
  /** The file's planned size in bytes (chooses the write mode under 'auto'). */
  plannedBytes?: number;
  /**
   * 'auto' (default): direct for files planned at DIRECT_MIN_BYTES or more;
   * the environment variable SLIMTENSOR_DIRECT_IO=0 turns that off and =1
   * makes it every file. true: direct whatever the size (where the
   * filesystem allows); false: through the page cache.
   */
  direct?: boolean | 'auto';
  /** @internal Opens the file (tests stand in a filesystem that refuses O_DIRECT). */
  open?: (file: string, flags: number | string, mode?: number) => Promise<fsp.FileHandle>;
}

function wantsDirect(o: OutputFileOptions): boolean {
  const O_DIRECT = (fs.constants as Record<string, number | undefined>).O_DIRECT;
  if (O_DIRECT === undefined) return false;
  const d = o.direct ?? 'auto';
  if (d !== 'auto') return d;
  const env = process.env.SLIMTENSOR_DIRECT_IO;
  if (env === '0' || env === '1') return env === '1';
  return (o.plannedBytes ?? 0) >= DIRECT_MIN_BYTES;
}

/** An aligned buffer of `n` bytes (JavaScript cannot align an allocation, so one is over-allocated and cut). */
function alignedBuffer(n: number): Uint8Array {
  const raw = Buffer.allocUnsafeSlow(n + BLOCK);
  const off = binding.alignmentOffset(raw, BLOCK);
  return new Uint8Array(raw.buffer, raw.byteOffset + off, n);
}

/** Writes all of `data` at `position`. */
export async function writeAll(fh: fsp.FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

export class OutputFile {
  /** Whether the bytes go around the page cache (false after a filesystem refused O_DIRECT at write). */
  direct: boolean;
  /** Bytes handed to write() so far (the next write's position). */
  private end = 0;
  /**
   * Aligned staging buffers (files opened for O_DIRECT; none otherwise):
   * the last `fill` bytes written are pending in stage[cur], everything
   * before them has gone to a write.
   */
  private readonly stage: Uint8Array[];
  private cur = 0;
  private fill = 0;
  /** The write of the other staging buffer, while it runs. */
  private inflight: Promise<void> | undefined;
  private fh: fsp.FileHandle | undefined;

  private constructor(
    readonly path: string,
    fh: fsp.FileHandle,
    direct: boolean,
    private readonly open: (file: string, flags: number | string, mode?: number) => Promise<fsp.FileHandle>,
  ) {
    this.fh = fh;
    this.direct = direct;
    this.stage = direct ? [alignedBuffer(CHUNK), alignedBuffer(CHUNK)] : [];
  }

  /** Creates (or truncates) `file`. */
  static async create(file: string, options: OutputFileOptions = {}): Promise<OutputFile> {
    const open = options.open ?? ((f, flags, mode) => fsp.open(f, flags, mode));
    if (wantsDirect(options)) {
      const c = fs.constants;
      const flags = c.O_WRONLY | c.O_CREAT | c.O_TRUNC | (c.O_DIRECT as number);
      const fh = await open(file, flags, 0o666).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'EINVAL') return undefined; // the filesystem has no direct I/O
        throw e;
      });
      if (fh !== undefined) return new OutputFile(file, fh, true, open);
    }
    return new OutputFile(file, await open(file, 'w'), false, open);
  }

  /** Writes `data` at `position`, which must be where the last write ended. The bytes are copied (direct mode) or written before this resolves: `data` may be reused at once. */
  async write(data: Uint8Array, position: number): Promise<void> {
    const fh = this.handle();
    if (position !== this.end) throw new SlimTensorError(`OutputFile ${this.path}: write at ${position}, but the file so far ends at ${this.end} (writes go front to back)`, 'ERR_VALUE');
    if (this.stage.length === 0) {
      this.end += data.length;
      return writeAll(fh, data, position);
    }
    let at = 0;
    while (at < data.length) {
      const buf = this.stage[this.cur] as Uint8Array;
      const n = Math.min(data.length - at, CHUNK - this.fill);
      buf.set(data.subarray(at, at + n), this.fill);
      this.fill += n;
      this.end += n;
      at += n;
      if (this.fill === CHUNK) await this.flush();
    }
  }

  /** Starts writing the current staging buffer (after the previous write ends) and moves to the other. */
  private async flush(): Promise<void> {
    await this.inflight;
    this.inflight = undefined;
    const buf = this.stage[this.cur] as Uint8Array;
    const length = Math.ceil(this.fill / BLOCK) * BLOCK;
    if (length > this.fill) buf.fill(0, this.fill, length);
    const p = this.writeStaged(buf.subarray(0, length), this.end - this.fill);
    // Seen by the next flush or close; until then a failure must not be an unhandled rejection.
    p.catch(() => undefined);
    this.inflight = p;
    this.fill = 0;
    this.cur ^= 1;
  }

  private async writeStaged(buf: Uint8Array, position: number): Promise<void> {
    try {
      await writeAll(this.handle(), buf, position);
    } catch (e) {
      // A filesystem may take O_DIRECT at open and refuse it at write
      // (some network and FUSE filesystems): go on through the page cache.
      if ((e as NodeJS.ErrnoException).code !== 'EINVAL' || !this.direct) throw e;
      await this.reopenBuffered();
      await writeAll(this.handle(), buf, position);
    }
  }

  private async reopenBuffered(): Promise<void> {
    const old = this.handle();
    this.fh = await this.open(this.path, 'r+');
    this.direct = false;
    await old.close().catch(() => undefined);
  }

  /** Writes what is staged, cuts the file to its size and closes it. */
  async close(): Promise<void> {
    this.handle();
    try {
      if (this.stage.length > 0) {
        if (this.fill > 0) await this.flush();
        await this.inflight;
        this.inflight = undefined;
        // The last block went out padded.
        await this.handle().truncate(this.end);
      }
    } catch (e) {
      await this.abort();
      throw e;
    }
    const fh = this.handle();
    this.fh = undefined;
    await fh.close();
  }

  /** Closes without writing what is staged (the caller removes the file). Never throws. */
  async abort(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await this.inflight?.catch(() => undefined);
    this.inflight = undefined;
    if (fh !== undefined) await fh.close().catch(() => undefined);
  }

  private handle(): fsp.FileHandle {
    if (this.fh === undefined) throw new SlimTensorError(`OutputFile ${this.path}: already closed`, 'ERR_VALUE');
    return this.fh;
  }
}

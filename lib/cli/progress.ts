// Progress of a model compression on stderr: a cli-progress bar on a
// terminal (tensor name, MB/s, ETA), plain lines otherwise (one per tensor,
// at most every half second, and the last one), nothing with --quiet.
import { SingleBar } from 'cli-progress';
import type { CompressProgress } from '../pipeline/compress';

export type ProgressSink = ((p: CompressProgress) => void) & { stop(): void };

function mbps(p: CompressProgress): number {
  return p.elapsedMs <= 0 ? 0 : p.bytesDone / 1e6 / (p.elapsedMs / 1000);
}

function eta(p: CompressProgress): string {
  const rate = p.elapsedMs <= 0 ? 0 : p.bytesDone / p.elapsedMs;
  if (rate <= 0) return '?';
  const s = Math.round((p.totalBytes - p.bytesDone) / rate / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

function shorten(name: string, n: number): string {
  return name.length <= n ? name.padEnd(n) : `…${name.slice(-(n - 1))}`;
}

/** A progress callback for compressModel writing to `stream` (stderr). */
export function progressReporter(stream: NodeJS.WriteStream, quiet: boolean): ProgressSink {
  if (quiet) return Object.assign(() => undefined, { stop: () => undefined });
  if (stream.isTTY === true) {
    const bar = new SingleBar(
      {
        format: '{bar} {percentage}% | {value}/{total} tensors | {tensor} | {speed} MB/s | ETA {etaText}',
        stream,
        hideCursor: true,
        clearOnComplete: false,
        barsize: 24,
        fps: 8,
      },
      { barCompleteChar: '█', barIncompleteChar: '░', format: '' },
    );
    let started = false;
    const f = (p: CompressProgress): void => {
      const payload = { tensor: shorten(p.phase === 'done' ? 'done' : (p.tensor ?? ''), 28), speed: mbps(p).toFixed(0), etaText: eta(p) };
      if (!started) {
        bar.start(p.count, p.index, payload);
        started = true;
      } else bar.update(p.index, payload);
    };
    return Object.assign(f, {
      stop: () => {
        if (started) bar.stop();
        started = false;
      },
    });
  }
  let last = 0;
  const f = (p: CompressProgress): void => {
    if (p.phase !== 'tensor') return;
    const now = Date.now();
    if (p.index !== p.count && now - last < 500) return;
    last = now;
    stream.write(`[${p.index}/${p.count}] ${p.tensor ?? ''} ${mbps(p).toFixed(0)} MB/s ETA ${eta(p)}\n`);
  };
  return Object.assign(f, { stop: () => undefined });
}

// Records every FileHandle.read call (buffer size, length, position), to
// check that a reader reads what it should and no more.
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface ReadCall {
  bufferBytes: number;
  length: number;
  position: number;
}

type ReadFn = (this: fsp.FileHandle, ...args: unknown[]) => Promise<{ bytesRead: number; buffer: unknown }>;

async function fileHandleProto(): Promise<{ read: ReadFn }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-spy-'));
  const file = path.join(dir, 'x');
  await fsp.writeFile(file, '');
  const fh = await fsp.open(file, 'r');
  const proto = Object.getPrototypeOf(fh) as { read: ReadFn };
  await fh.close();
  await fsp.rm(dir, { recursive: true, force: true });
  return proto;
}

/**
 * Patches FileHandle.prototype.read for the duration of `body` and returns
 * the calls made (only the (buffer, offset, length, position) form is
 * decoded; other forms are recorded with length -1).
 */
export async function spyOnReads<T>(body: () => Promise<T>): Promise<{ result: T; calls: ReadCall[] }> {
  const proto = await fileHandleProto();
  const original = proto.read;
  const calls: ReadCall[] = [];
  proto.read = function (this: fsp.FileHandle, ...args: unknown[]) {
    const [buffer, , length, position] = args;
    calls.push({
      bufferBytes: ArrayBuffer.isView(buffer) ? buffer.byteLength : -1,
      length: typeof length === 'number' ? length : -1,
      position: typeof position === 'number' ? position : -1,
    });
    return original.apply(this, args);
  };
  try {
    return { result: await body(), calls };
  } finally {
    proto.read = original;
  }
}

// Token files: little-endian int32 ids, one after another (what
// `slimtensor eval --tokens` and `report --eval` read).
import { promises as fsp } from 'node:fs';
import { SlimTensorError } from '../errors';

/** Reads a token file; ERR_FORMAT when its size is not a whole number of int32 ids. */
export async function readTokenFile(file: string): Promise<Int32Array> {
  const bytes = await fsp.readFile(file);
  if (bytes.length % 4 !== 0) throw new SlimTensorError(`${file}: ${bytes.length} bytes is not a whole number of little-endian int32 token ids`, 'ERR_FORMAT');
  const out = new Int32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = bytes.readInt32LE(4 * i);
  return out;
}

/** Writes token ids as a token file. */
export async function writeTokenFile(file: string, tokens: ArrayLike<number>): Promise<void> {
  const b = Buffer.alloc(tokens.length * 4);
  for (let i = 0; i < tokens.length; i++) b.writeInt32LE(tokens[i] as number, 4 * i);
  await fsp.writeFile(file, b);
}

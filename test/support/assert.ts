// Small assertions the test files share.
import { expect } from 'chai';
import { SlimTensorError } from '../../lib/index';

/** The bytes a TypedArray views (empty for undefined). */
export function bytesOf(a: ArrayBufferView | undefined): Buffer {
  return a ? Buffer.from(a.buffer, a.byteOffset, a.byteLength) : Buffer.alloc(0);
}

/** The SlimTensorError `f` throws; fails when it throws nothing or something else. */
export function thrown(f: () => unknown): SlimTensorError {
  try {
    f();
  } catch (e) {
    expect(e).to.be.instanceOf(SlimTensorError);
    return e as SlimTensorError;
  }
  throw new Error('expected an error');
}

/** The SlimTensorError `p` rejects with; fails when it resolves or rejects with something else. */
export async function rejected(p: Promise<unknown> | undefined): Promise<SlimTensorError> {
  try {
    await p;
  } catch (e) {
    expect(e).to.be.instanceOf(SlimTensorError);
    return e as SlimTensorError;
  }
  throw new Error('expected a rejection');
}

/**
 * Transfers `buffer` away with structuredClone, as a program might during an
 * async call: 'moved' (detached: async calls work on copies here),
 * 'copied' (a buffer an async call marked untransferable, Node 20) or
 * 'refused' (the same on Node 21+: DataCloneError).
 */
export function transferAway(buffer: ArrayBufferLike): 'moved' | 'copied' | 'refused' {
  const before = buffer.byteLength;
  try {
    structuredClone(buffer, { transfer: [buffer as ArrayBuffer] });
  } catch (e) {
    expect((e as Error).name).to.equal('DataCloneError');
    return 'refused';
  }
  return buffer.byteLength === before ? 'copied' : 'moved';
}

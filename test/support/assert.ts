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

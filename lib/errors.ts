/** Error codes every slimtensor failure carries in `error.code`. */
export type ErrorCode =
  | 'ERR_SHAPE' // a dimension or length does not fit what the operation needs
  | 'ERR_DTYPE' // an element type the operation does not accept
  | 'ERR_VALUE' // a bad option value, or bad data (NaN/Inf where not allowed)
  | 'ERR_FORMAT' // a malformed or unsupported file
  | 'ERR_UNSUPPORTED' // a backend or feature this build or machine lacks
  | 'ERR_DETACHED' // a buffer was transferred, detached or resized during an async call
  | 'ERR_INTERNAL'; // a bug: please report it

/** The one error class slimtensor throws (and rejects with). */
export class SlimTensorError extends Error {
  readonly code: ErrorCode;

  constructor(message: string, code: ErrorCode) {
    super(message);
    this.name = 'SlimTensorError';
    this.code = code;
  }
}

/** Throws a SlimTensorError; `where` names the call, e.g. `quantize`. */
export function fail(where: string, code: ErrorCode, message: string): never {
  throw new SlimTensorError(`${where}: ${message}`, code);
}

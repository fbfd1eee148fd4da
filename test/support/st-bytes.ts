// Builds safetensors bytes by hand for tests, independent of lib/: an
// 8-byte little-endian length, the JSON text as given (so tests can write
// malformed headers), then the data.
export function stFile(json: string | object, data: Uint8Array = new Uint8Array(0), pad = true): Uint8Array {
  const text = typeof json === 'string' ? json : JSON.stringify(json);
  let header = Buffer.from(text, 'utf8');
  if (pad && header.length % 8 !== 0) header = Buffer.concat([header, Buffer.alloc(8 - (header.length % 8), 0x20)]);
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

/** Tensors packed in order: a header object and the data, from name -> [dtype, shape, bytes]. */
export function stPack(tensors: [string, string, number[], Uint8Array][], metadata?: Record<string, string>): { header: Record<string, unknown>; data: Uint8Array } {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let at = 0;
  for (const [name, dtype, shape, bytes] of tensors) {
    header[name] = { dtype, shape, data_offsets: [at, at + bytes.length] };
    at += bytes.length;
  }
  const data = new Uint8Array(at);
  let p = 0;
  for (const [, , , bytes] of tensors) {
    data.set(bytes, p);
    p += bytes.length;
  }
  return { header, data };
}

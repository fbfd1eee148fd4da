// Writes a SentencePiece tokenizer.model (protobuf ModelProto) for tests,
// from sentencepiece_model.proto's field numbers and protobuf's wire format,
// independently of lib/convert/sentencepiece-model.ts (so reader and writer
// do not share mistakes).

function varint(out: number[], v: number): void {
  if (v < 0) {
    // int32 negatives: ten-byte two's complement.
    let big = BigInt.asUintN(64, BigInt(v));
    for (let i = 0; i < 9; i++) {
      out.push(Number(big & 0x7fn) | 0x80);
      big >>= 7n;
    }
    out.push(Number(big));
    return;
  }
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

function key(out: number[], field: number, wire: number): void {
  varint(out, field * 8 + wire);
}

function bytesField(out: number[], field: number, b: ArrayLike<number>): void {
  key(out, field, 2);
  varint(out, b.length);
  for (let i = 0; i < b.length; i++) out.push(b[i] as number);
}

function intField(out: number[], field: number, v: number): void {
  key(out, field, 0);
  varint(out, v);
}

export interface SpPiece {
  piece: string;
  score: number;
  type: number;
}

export interface SpModel {
  pieces: readonly SpPiece[];
  /** 1 unigram, 2 BPE. */
  modelType: number;
  byteFallback: boolean;
  ids?: { unk: number; bos: number; eos: number; pad: number };
  addDummyPrefix: boolean;
}

/** The serialized ModelProto; an unknown field in each message checks that readers skip them. */
export function sentencePieceModelBytes(m: SpModel): Uint8Array {
  const out: number[] = [];
  const enc = new TextEncoder();
  for (const p of m.pieces) {
    const msg: number[] = [];
    bytesField(msg, 1, enc.encode(p.piece));
    key(msg, 2, 5);
    const f = new Uint8Array(new Float32Array([p.score]).buffer);
    msg.push(...f);
    if (p.type !== 1) intField(msg, 3, p.type);
    bytesField(out, 1, msg);
  }
  const trainer: number[] = [];
  bytesField(trainer, 2, enc.encode('model-prefix')); // unknown to the reader: skipped
  intField(trainer, 3, m.modelType);
  intField(trainer, 4, m.pieces.length);
  if (m.byteFallback) intField(trainer, 35, 1);
  if (m.ids !== undefined) {
    intField(trainer, 40, m.ids.unk);
    intField(trainer, 41, m.ids.bos);
    intField(trainer, 42, m.ids.eos);
    intField(trainer, 43, m.ids.pad);
  }
  bytesField(out, 2, trainer);
  const norm: number[] = [];
  bytesField(norm, 1, enc.encode('identity'));
  intField(norm, 3, m.addDummyPrefix ? 1 : 0);
  intField(norm, 4, 0);
  bytesField(out, 3, norm);
  return Uint8Array.from(out);
}

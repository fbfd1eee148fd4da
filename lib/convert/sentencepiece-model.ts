// Reads a SentencePiece `tokenizer.model` (a protobuf ModelProto) far
// enough to convert it: the pieces (text, score, type), the trainer's model
// type, byte fallback and special ids, and the normalizer's dummy prefix.
// Field numbers are sentencepiece_model.proto's. The file is hostile: every
// length is checked against the bytes left before it is used, and any
// malformation is an ERR_FORMAT naming the file and the field.
import { SlimTensorError } from '../errors';
import { TOKEN_TYPES } from '../model/token-types';

/** TrainerSpec.ModelType values. */
export const SP_MODEL_TYPES = { unigram: 1, bpe: 2, word: 3, char: 4 } as const;

export interface SentencePieceModel {
  pieces: { piece: string; score: number; type: number }[];
  modelType: number;
  byteFallback: boolean;
  unkId: number;
  bosId: number;
  eosId: number;
  padId: number;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
}

// ignoreBOM: a piece may be U+FEFF itself; the default would strip it.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

class Reader {
  pos: number;
  constructor(
    readonly bytes: Uint8Array,
    readonly end: number,
    start: number,
    readonly file: string,
    readonly what: string,
  ) {
    this.pos = start;
  }

  fail(message: string): never {
    throw new SlimTensorError(`SentencePiece model ${this.file}: ${this.what}: ${message}`, 'ERR_FORMAT');
  }

  done(): boolean {
    return this.pos >= this.end;
  }

  /** A varint as a number; values beyond 2^53 are only ever skipped, so precision past that does not matter. */
  varint(): number {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail(`a varint runs past the end (offset ${this.pos})`);
      const b = this.bytes[this.pos++] as number;
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 128;
    }
    return this.fail(`a varint at offset ${this.pos - 10} is longer than 10 bytes`);
  }

  /** An int32 field (negative values are 10-byte two's complement varints). */
  int32(): number {
    // The low 32 bits, two's complement, as protobuf defines int32.
    let low = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail(`a varint runs past the end (offset ${this.pos})`);
      const b = this.bytes[this.pos++] as number;
      if (i < 5) low |= (b & 0x7f) << (7 * i);
      if (b < 0x80) return low | 0;
    }
    return this.fail(`a varint at offset ${this.pos - 10} is longer than 10 bytes`);
  }

  length(): number {
    const n = this.varint();
    if (n > this.end - this.pos) this.fail(`a field of ${n} bytes at offset ${this.pos} runs past the end of its message (${this.end - this.pos} bytes left)`);
    return n;
  }

  f32(): number {
    if (this.end - this.pos < 4) this.fail(`a float at offset ${this.pos} runs past the end`);
    const v = new DataView(this.bytes.buffer, this.bytes.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }

  string(): string {
    const n = this.length();
    const s = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    try {
      return utf8.decode(s);
    } catch {
      return this.fail(`a string at offset ${this.pos - n} is not valid UTF-8`);
    }
  }

  skip(wire: number): void {
    switch (wire) {
      case 0:
        this.varint();
        return;
      case 1:
        if (this.end - this.pos < 8) this.fail(`a 64-bit field at offset ${this.pos} runs past the end`);
        this.pos += 8;
        return;
      case 2: {
        const n = this.length(); // before reading pos: length() moves it past the varint
        this.pos += n;
        return;
      }
      case 5:
        if (this.end - this.pos < 4) this.fail(`a 32-bit field at offset ${this.pos} runs past the end`);
        this.pos += 4;
        return;
      default:
        this.fail(`unsupported protobuf wire type ${wire} at offset ${this.pos}`);
    }
  }

  /** The next field's (number, wire type). */
  key(): [number, number] {
    const k = this.varint();
    const field = Math.floor(k / 8);
    if (field === 0) this.fail(`field number 0 at offset ${this.pos}`);
    return [field, k % 8];
  }

  /** A sub-message's reader; this one skips past it. */
  sub(what: string): Reader {
    const n = this.length();
    const r = new Reader(this.bytes, this.pos + n, this.pos, this.file, what);
    this.pos += n;
    return r;
  }

  expect(wire: number, want: number, field: string): void {
    if (wire !== want) this.fail(`${field} has wire type ${wire}, expected ${want}`);
  }
}

function readPiece(r: Reader): { piece: string; score: number; type: number } {
  let piece: string | undefined;
  let score = 0;
  // SentencePiece.Type values are GGUF's token_type values (normal 1 ... byte 6).
  let type: number = TOKEN_TYPES.normal;
  while (!r.done()) {
    const [f, w] = r.key();
    if (f === 1) {
      r.expect(w, 2, 'piece');
      piece = r.string();
    } else if (f === 2) {
      r.expect(w, 5, 'score');
      score = r.f32();
    } else if (f === 3) {
      r.expect(w, 0, 'type');
      type = r.int32();
      if (type < 1 || type > 6) r.fail(`type ${type} is not a SentencePiece piece type (1..6)`);
    } else r.skip(w);
  }
  if (piece === undefined) r.fail('has no piece text');
  return { piece, score, type };
}

/** Parses a SentencePiece ModelProto; `file` names it in errors. */
export function parseSentencePieceModel(bytes: Uint8Array, file: string): SentencePieceModel {
  const m: SentencePieceModel = {
    pieces: [],
    modelType: SP_MODEL_TYPES.unigram,
    byteFallback: false,
    unkId: 0,
    bosId: 1,
    eosId: 2,
    padId: -1,
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
  };
  const top = new Reader(bytes, bytes.length, 0, file, 'ModelProto');
  while (!top.done()) {
    const [f, w] = top.key();
    if (f === 1) {
      top.expect(w, 2, 'pieces');
      m.pieces.push(readPiece(top.sub(`pieces[${m.pieces.length}]`)));
    } else if (f === 2) {
      top.expect(w, 2, 'trainer_spec');
      const r = top.sub('trainer_spec');
      while (!r.done()) {
        const [g, v] = r.key();
        const field = ({ 3: 'model_type', 35: 'byte_fallback', 40: 'unk_id', 41: 'bos_id', 42: 'eos_id', 43: 'pad_id' } as Record<number, string>)[g];
        if (field === undefined) {
          r.skip(v);
          continue;
        }
        r.expect(v, 0, field);
        const x = r.int32();
        if (g === 3) m.modelType = x;
        else if (g === 35) m.byteFallback = x !== 0;
        else if (g === 40) m.unkId = x;
        else if (g === 41) m.bosId = x;
        else if (g === 42) m.eosId = x;
        else m.padId = x;
      }
    } else if (f === 3) {
      top.expect(w, 2, 'normalizer_spec');
      const r = top.sub('normalizer_spec');
      while (!r.done()) {
        const [g, v] = r.key();
        if (g === 3 || g === 4) {
          r.expect(v, 0, g === 3 ? 'add_dummy_prefix' : 'remove_extra_whitespaces');
          const x = r.varint() !== 0;
          if (g === 3) m.addDummyPrefix = x;
          else m.removeExtraWhitespaces = x;
        } else r.skip(v);
      }
    } else top.skip(w);
  }
  if (m.pieces.length === 0) throw new SlimTensorError(`SentencePiece model ${file}: has no pieces (is it a tokenizer.model?)`, 'ERR_FORMAT');
  return m;
}

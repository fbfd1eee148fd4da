// ModelBlock: one block of a model loaded alone (the runtime side of the
// sequential calibration pass). On stories260K: block by block from the
// embedding gives the whole model's linear inputs bit for bit; weights
// replaced in memory are the ones multiplied; the errors.
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dequantize, loadModel, quantize, Tensor, type ActivationBatch } from '../lib/index';
import { GGUFReader } from '../lib/formats/gguf';
import { GGUFWriter } from '../lib/formats/gguf-writer';
import { planModel, type ModelPlan } from '../lib/model/load';
import { ModelBlock } from '../lib/model/model';
import { rejected } from './support/assert';

const MODEL = path.join(__dirname, '..', 'models', 'stories260K.gguf');
const TOKENS = [1, 429, 491, 433, 295, 429, 444, 445, 265, 262, 263, 342, 430, 446, 277, 261, 430, 272, 340, 262, 308, 434, 434, 285, 316, 432, 436];

async function weight(name: string): Promise<Tensor> {
  const g = await GGUFReader.open(MODEL);
  try {
    return (await g.readTensor(name)) as Tensor;
  } finally {
    await g.close();
  }
}

describe('ModelBlock (one block alone)', function () {
  this.timeout(60_000);
  let plan: ModelPlan;
  let tmp: string;
  before(async () => {
    plan = await planModel(MODEL);
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-block-'));
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it("block by block from the embedding: every linear input is the whole model's, bit for bit", async () => {
    const m = await loadModel(MODEL, { activations: 'f32' });
    const whole: ActivationBatch[] = [];
    try {
      await m.forward(TOKENS, { logits: 'none', onActivation: (b) => void whole.push(b) });
    } finally {
      await m.dispose();
    }
    const seen: ActivationBatch[] = [];
    let h: Float32Array | undefined;
    for (let l = 0; l < plan.hparams.blockCount; l++) {
      const b = await ModelBlock.load(plan, l, { embedding: l === 0, activations: 'f32' });
      try {
        expect(b.linears.map((x) => x.name)).to.deep.equal(['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down'].map((s) => `blk.${l}.${s}.weight`));
        h = await b.run(h ? { hidden: h } : { tokens: TOKENS }, { onActivation: (x) => void seen.push(x) });
      } finally {
        b.dispose();
      }
      expect(h.length).to.equal(TOKENS.length * 64);
    }
    expect(seen.length).to.equal(whole.length).and.equal(4 * plan.hparams.blockCount);
    seen.forEach((s, i) => {
      const w = whole[i] as ActivationBatch;
      expect([s.layer, s.site, s.weights, s.rows, s.width, s.position]).to.deep.equal([w.layer, w.site, w.weights, w.rows, w.width, w.position]);
      expect(Buffer.from(s.data.buffer).equals(Buffer.from(w.data.buffer)), `${s.layer} ${s.site}`).to.equal(true);
    });
  });

  it('runs the weights it is given: the same ones change nothing, zero o and down pass the input through, q8_0 moves the output a little', async () => {
    const tokens = { tokens: TOKENS };
    const run = async (replace?: Map<string, Tensor | Awaited<ReturnType<typeof quantize>>>): Promise<Float32Array> => {
      const b = await ModelBlock.load(plan, 0, { embedding: true, activations: 'f32', tempDir: tmp, ...(replace ? { replace } : {}) });
      try {
        return await b.run(tokens);
      } finally {
        b.dispose();
      }
    };
    const base = await run();
    const down = await weight('blk.0.ffn_down.weight');
    const o = await weight('blk.0.attn_output.weight');
    expect(Array.from(await run(new Map([['blk.0.ffn_down.weight', down]])))).to.deep.equal(Array.from(base));
    // h + 0 + 0: the block's output is its input, the embedding rows
    const embd = await weight('token_embd.weight');
    const passed = await run(new Map([['blk.0.ffn_down.weight', Tensor.zeros([64, 172], 'f32')], ['blk.0.attn_output.weight', Tensor.zeros([64, 64], 'f32')]]));
    const rows = TOKENS.flatMap((t) => Array.from((embd.data as Float32Array).subarray(t * 64, t * 64 + 64)));
    expect(Array.from(passed)).to.deep.equal(rows);
    const q = await quantize(o, { format: 'q8_0' });
    const moved = await run(new Map([['blk.0.attn_output.weight', q]]));
    let diff = 0;
    let norm = 0;
    for (let i = 0; i < base.length; i++) {
      diff = Math.max(diff, Math.abs((moved[i] as number) - (base[i] as number)));
      norm = Math.max(norm, Math.abs(base[i] as number));
    }
    expect(diff).to.be.above(0).and.below(0.01 * norm);
    // int4 with zero points (compressed-tensors packing on the way) runs as its dequantized values
    const up = await weight('blk.0.ffn_up.weight');
    const q4 = await quantize(up, { format: 'int4', groupSize: 32, symmetric: false });
    const asQ = await run(new Map([['blk.0.ffn_up.weight', q4]]));
    const asF = await run(new Map([['blk.0.ffn_up.weight', await dequantize(q4)]]));
    let d4 = 0;
    for (let i = 0; i < asQ.length; i++) d4 = Math.max(d4, Math.abs((asQ[i] as number) - (asF[i] as number)));
    expect(d4).to.be.below(1e-4 * norm);
    expect(Array.from(asQ)).to.not.deep.equal(Array.from(base));
    expect(await fsp.readdir(tmp)).to.deep.equal([]); // the replacements' file is gone
  });

  it("Llama 3's rope_freqs (a global tensor) reach every block alone", async () => {
    // stories260K plus rope frequency factors (head_dim 8: 4 of them)
    const file = path.join(tmp, 'rope-freqs.gguf');
    const g = await GGUFReader.open(MODEL);
    try {
      const tensors = [{ name: 'rope_freqs.weight', shape: [4], type: 'F32' as const }, ...g.tensors.map((t) => ({ name: t.name, shape: t.shape, type: t.type as 'F32' }))];
      const w = await GGUFWriter.create(file, { entries: g.entries, tensors });
      await w.write('rope_freqs.weight', Float32Array.of(1, 3, 9, 40));
      for (const t of g.tensors) await w.write(t.name, await g.readTensorBytes(t));
      await w.close();
    } finally {
      await g.close();
    }
    const last = async (p: string): Promise<Float32Array> => {
      const m = await loadModel(p, { activations: 'f32' });
      let x = new Float32Array(0);
      try {
        await m.forward(TOKENS, { logits: 'none', activationSites: ['ffn_down'], onActivation: (b) => void (b.layer === 4 && (x = b.data.slice())) });
      } finally {
        await m.dispose();
      }
      return x;
    };
    const whole = await last(file);
    expect(Array.from(whole)).to.not.deep.equal(Array.from(await last(MODEL))); // the factors matter
    const p = await planModel(file);
    let h: Float32Array | undefined;
    let x = new Float32Array(0);
    for (let l = 0; l < 5; l++) {
      const b = await ModelBlock.load(p, l, { embedding: l === 0, activations: 'f32' });
      try {
        h = await b.run(h ? { hidden: h } : { tokens: TOKENS }, { activationSites: ['ffn_down'], onActivation: (a) => void (l === 4 && (x = a.data.slice())) });
      } finally {
        b.dispose();
      }
    }
    expect(Buffer.from(x.buffer).equals(Buffer.from(whole.buffer))).to.equal(true);
  });

  it('errors name what is wrong', async () => {
    const b = await ModelBlock.load(plan, 1, { activations: 'f32' });
    try {
      expect((await rejected(b.run({ tokens: TOKENS }))).message).to.match(/block 1 was loaded without the token embedding/);
      expect((await rejected(b.run({ hidden: new Float32Array(65) }))).message).to.match(/not a positive multiple of embedding_length 64/);
      const bad = new Float32Array(128);
      bad[70] = NaN;
      expect((await rejected(b.run({ hidden: bad }))).message).to.match(/hidden state 1, value 6 is NaN/);
      expect((await rejected(b.run({ hidden: new Float32Array(64 * 129) }))).message).to.match(/129 positions do not fit the context of 128/);
    } finally {
      b.dispose();
    }
    expect((await rejected(ModelBlock.load(plan, 5))).message).to.match(/layer must be an integer in 0..4/);
    expect((await rejected(ModelBlock.load(plan, 0, { replace: new Map([['blk.1.attn_q.weight', Tensor.zeros([64, 64], 'f32')]]) }))).message).to.match(/not a linear weight of block 0/);
    expect((await rejected(ModelBlock.load(plan, 0, { replace: new Map([['blk.0.attn_q.weight', Tensor.zeros([64, 32], 'f32')]]) }))).message).to.match(/is \[64, 32\]; the block needs \[64, 64\]/);
  });
});

import { compressModel } from './lib/pipeline/compress';
import { SafetensorsModel } from './lib/formats/safetensors';
(async () => {
  const r = await compressModel({ input: 'models/stories260K.gguf', output: '/tmp/w4g', recipe: 'w4a16', format: 'compressed-tensors', overwrite: true } as any);
  console.log(r.warnings, r.tensors.slice(0, 6).map((t: any) => [t.name, t.method, t.reason]));
  const st = await SafetensorsModel.open('/tmp/w4g'); console.log(st.tensors.slice(0, 8).map(t => t.name + ' ' + t.dtype));
})();

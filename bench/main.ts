// `npm run bench [-- name... --json --runs N --quick]`: runs the named
// benchmarks (all of them without a name) and prints a markdown report, or
// with --json one JSON document on stdout. Progress goes to stderr so both
// outputs can be redirected as they are.
import { parseArgs } from 'node:util';
import { describeMachine, formatMachine, type Benchmark, type BenchOptions } from './harness';
import { quantizeBench } from './quantize';
import { searchFloorBench } from './search-floor';
import { pipelineBench } from './pipeline';
import { distillBench } from './distill';
import { lowrankBench } from './lowrank';
import { sparsityBench } from './sparsity';
import { tokenizerBench } from './tokenizer';
import { queueBench } from './queue';
import { llamaQuantizeBench } from './llama-quantize';
import { inferBench } from './infer';
import { gptqBench } from './gptq';
import { sequentialBench } from './sequential';
import { convertBench } from './convert';
import { calibrationBench } from './calibration';

// The registry: later benchmarks (sparsity, lowrank, distill, pipeline) add
// one line here and one module beside this file.
const BENCHMARKS: readonly Benchmark[] = [quantizeBench, searchFloorBench, sparsityBench, pipelineBench, convertBench, llamaQuantizeBench, distillBench, lowrankBench, tokenizerBench, queueBench, inferBench, gptqBench, calibrationBench, sequentialBench];

const DEFAULT_RUNS = 7;
const QUICK_RUNS = 3;

function usage(): string {
  const names = BENCHMARKS.map((b) => `  ${b.name.padEnd(13)} ${b.description}`).join('\n');
  return [
    'usage: npm run bench -- [name...] [--json] [--runs N] [--quick] [--ggml PATH] [--llama-quantize PATH]',
    '',
    '  --json     print one JSON document instead of markdown (use `npm run -s` to drop npm\'s banner)',
    `  --runs N   timed repetitions per measurement, median reported (default ${DEFAULT_RUNS}, ${QUICK_RUNS} with --quick)`,
    '  --quick    a small problem size: a smoke test, not a measurement',
    '  --llama-quantize PATH   llama.cpp\'s llama-quantize for the pipeline and llama-quantize benchmarks (a peer, never a dependency; default ../shared/peers/llama.cpp/llama-quantize if present)',
    '  --ggml P   quantize: ggml\'s quantizer benchmark to compare against (default: ../shared/peers/llama.cpp/ggml-quant-bench if present)',
    '',
    'benchmarks:',
    names,
  ].join('\n');
}

interface Args {
  names: string[];
  json: boolean;
  runs: number;
  quick: boolean;
  llamaQuantize: string | undefined;
  ggml: string | undefined;
}

function parse(argv: string[]): Args | string {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        json: { type: 'boolean', default: false },
        quick: { type: 'boolean', default: false },
        runs: { type: 'string' },
        'llama-quantize': { type: 'string' },
        ggml: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    return (e as Error).message;
  }
  const { values, positionals } = parsed;
  if (values.help) return '';
  const known = new Set(BENCHMARKS.map((b) => b.name));
  const unknown = positionals.filter((n) => !known.has(n));
  if (unknown.length > 0) return `unknown benchmark ${unknown.map((n) => JSON.stringify(n)).join(', ')}`;
  let runs = values.quick ? QUICK_RUNS : DEFAULT_RUNS;
  if (values.runs !== undefined) {
    runs = Number(values.runs);
    if (!Number.isInteger(runs) || runs < 1 || runs > 1000) return `--runs must be an integer in 1..1000, got ${JSON.stringify(values.runs)}`;
  }
  return { names: positionals, json: values.json, runs, quick: values.quick, llamaQuantize: values['llama-quantize'], ggml: values.ggml };
}

async function main(): Promise<number> {
  const args = parse(process.argv.slice(2));
  if (typeof args === 'string') {
    // '' is --help: usage on stdout and success; anything else is an error.
    if (args === '') {
      process.stdout.write(`${usage()}\n`);
      return 0;
    }
    process.stderr.write(`bench: ${args}\n\n${usage()}\n`);
    return 2;
  }
  // Registry order, not argument order: reports always read the same way.
  const selected = args.names.length === 0 ? BENCHMARKS : BENCHMARKS.filter((b) => args.names.includes(b.name));
  const options: BenchOptions = {
    runs: args.runs,
    quick: args.quick,
    log: (m) => process.stderr.write(`${m}\n`),
    ...(args.llamaQuantize !== undefined ? { llamaQuantize: args.llamaQuantize } : {}),
    ...(args.ggml !== undefined ? { ggml: args.ggml } : {}),
  };
  const machine = describeMachine();
  if (!args.json) process.stdout.write(`${formatMachine(machine)}\n\n`);
  const results: Record<string, object> = {};
  for (const b of selected) {
    const outcome = await b.run(options);
    results[b.name] = outcome.result;
    if (!args.json) process.stdout.write(`${outcome.markdown}\n\n`);
  }
  if (args.json) {
    process.stdout.write(`${JSON.stringify({ machine, runs: args.runs, quick: args.quick, benchmarks: results }, null, 2)}\n`);
  }
  return 0;
}

main().then(
  (code) => {
    // exitCode, not exit(): let a large JSON document finish writing to a pipe.
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  },
);

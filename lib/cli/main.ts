#!/usr/bin/env node
// The `slimtensor` command. Exit codes: 0 success, 1 a failure (the
// SlimTensorError or I/O message is printed), 2 a usage error, 130
// interrupted by Ctrl-C (the partial output removed).
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { backends } from '../backend';
import { DEMO_PRESET_IDS, runDemo, selectPresets } from '../demo';
import { SlimTensorError } from '../errors';
import { renderDemo } from './demo-output';
import { EXIT_INTERRUPTED, inspect, lowrankRecipe, parseSize, presets, readRecipeFile, report, runCompression, type RunOptions } from './model-commands';
import { parsePrunePattern, PRESET_NAMES, PRUNE_LAYOUTS, pruneRecipe, TARGETS, type PruneLayout, type Target } from '../pipeline/recipe';

const EXIT_ERROR = 1;
const EXIT_USAGE = 2;

/** A command-line mistake: printed with the usage hint, exit code 2. */
class UsageError extends Error {}

/** `--formats a,b --formats c` -> ['a', 'b', 'c'], checked against the presets. */
function parseFormats(v: unknown): string[] | undefined {
  if (v === undefined) return undefined;
  const list = (Array.isArray(v) ? v : [v]).flatMap((s) => String(s).split(',')).map((s) => s.trim()).filter((s) => s !== '');
  try {
    selectPresets(list);
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  return list;
}

function printBackends(json: boolean): void {
  const b = backends();
  if (json) {
    process.stdout.write(`${JSON.stringify(b, null, 2)}\n`);
    return;
  }
  const cuda = b.cuda.available ? 'available' : `unavailable${b.cuda.reason !== undefined ? ` (${b.cuda.reason})` : ''}`;
  process.stdout.write(
    [
      `cpu:  kernel ${b.cpu.kernel}; features ${b.cpu.features.join(', ') || 'none'}`,
      `      ${b.cpu.threads} threads per operation (${b.cpu.hardwareThreads} hardware threads)`,
      `cuda: ${b.cuda.compiled ? 'compiled' : 'not compiled'}, ${cuda}`,
    ].join('\n') + '\n',
  );
}

function print(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

const QUANTIZE_PRESETS = PRESET_NAMES.filter((n) => n !== '2of4');

/** Options every compressing command shares. */
function runOptions<T>(y: import('yargs').Argv<T>) {
  return y
    .option('output', { alias: 'o', type: 'string', demandOption: true, describe: 'GGUF file or folder to write (written under a temporary name, renamed when complete)' })
    .option('threads', { type: 'number', describe: 'Threads per operation (default: all cores)' })
    .option('force', { alias: 'f', type: 'boolean', default: false, describe: 'Replace an existing output' })
    .option('memory', { type: 'string', describe: 'Tensor buffer budget, e.g. 512MiB (default 1GiB; a larger tensor still runs, alone)' })
    .option('shard-size', { type: 'string', describe: 'safetensors outputs: largest shard, e.g. 5GB (default: one file)' })
    .option('json', { type: 'boolean', default: false, describe: 'Print the report as JSON' })
    .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'No progress output' })
    .option('verbose', { alias: 'v', type: 'boolean', default: false, describe: 'List every tensor in the report' })
    .option('error', { type: 'boolean', default: true, describe: 'Measure each tensor\'s error against its original (--no-error: skip that pass, faster; the report shows no RMSE)' });
}

interface RunArgs {
  input: string;
  output: string;
  threads: number | undefined;
  force: boolean;
  memory: string | undefined;
  'shard-size': string | undefined;
  json: boolean;
  quiet: boolean;
  verbose: boolean;
  error: boolean;
  target?: string | undefined;
}

/** `--target`: the consumer a compressed-tensors output is written for. */
function targetOption<T>(y: import('yargs').Argv<T>) {
  return y.option('target', {
    type: 'string',
    choices: TARGETS,
    describe: "compressed-tensors outputs: the consumer ('vllm': only layers that fit vLLM's Marlin kernel are quantized; 'transformers': compressed-tensors' own rules). Default: the recipe's",
  });
}

function toRunOptions(a: RunArgs, recipe: RunOptions['recipe']): RunOptions {
  if (a.threads !== undefined && !(Number.isInteger(a.threads) && a.threads >= 1 && a.threads <= 1024)) throw new UsageError(`--threads must be an integer in 1..1024, got ${a.threads}`);
  const size = (v: string | undefined, what: string): number | undefined => {
    if (v === undefined) return undefined;
    try {
      return parseSize(v, what);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  };
  return {
    input: a.input,
    output: a.output,
    recipe,
    threads: a.threads,
    force: a.force,
    json: a.json,
    quiet: a.quiet,
    verbose: a.verbose,
    measureError: a.error,
    memory: size(a.memory, '--memory'),
    shardSize: size(a['shard-size'], '--shard-size'),
    target: a.target as Target | undefined,
  };
}

function buildParser(argv: string[]) {
  return yargs(argv)
    .scriptName('slimtensor')
    .usage('$0 <command> [options]')
    .command(
      'inspect <path>',
      'Show the metadata and the tensors (name, dtype, shape, bytes) of a GGUF file, a safetensors file or a Hugging Face folder',
      (y) => y.positional('path', { type: 'string', demandOption: true }).option('json', { type: 'boolean', default: false, describe: 'Print as JSON' }),
      async (args) => print(await inspect(args.path, args.json)),
    )
    .command(
      'quantize <input>',
      `Quantize a model with a preset (${QUANTIZE_PRESETS.join(', ')})`,
      (y) =>
        targetOption(runOptions(y.positional('input', { type: 'string', demandOption: true, describe: 'GGUF file, .safetensors file or Hugging Face folder' })))
          .option('preset', { alias: 'p', type: 'string', demandOption: true, choices: QUANTIZE_PRESETS, describe: 'The recipe to apply' })
          .option('search', { type: 'string', choices: ['none', 'mse'], describe: 'Scale search (mse: slower, lower error)' }),
      async (args) => {
        const recipe = args.search === undefined ? args.preset : { extends: args.preset, search: args.search as 'none' | 'mse', name: `${args.preset}${args.search === 'mse' ? '-mse' : ''}` };
        print(await runCompression(toRunOptions(args as unknown as RunArgs, recipe)));
      },
    )
    .command(
      'prune <input>',
      'N:M structured sparsity by magnitude of every matrix but norms, embedding and head, the pruned weights written dense: a Hugging Face folder stays a Hugging Face folder, a GGUF file stays GGUF',
      (y) =>
        runOptions(y.positional('input', { type: 'string', demandOption: true, describe: 'GGUF file, .safetensors file or Hugging Face folder' }))
          .option('pattern', { type: 'string', default: '2:4', describe: "Keep N of every M consecutive weights along a row ('2:4', '1:4', '4:8', ...)" })
          .option('layout', {
            type: 'string',
            choices: PRUNE_LAYOUTS,
            default: 'dense',
            describe: "How 2:4 Linear weights of a Hugging Face folder are stored: 'dense' (every consumer loads it) or compressed-tensors 'sparse-24-bitmask' (read only by vLLM before 0.19.1, transformers with compressed-tensors before its sparse removal, and slimtensor)",
          })
          .check((a) => {
            try {
              parsePrunePattern(a.pattern, '--pattern');
            } catch (e) {
              throw new UsageError((e as Error).message);
            }
            return true;
          }),
      async (args) => {
        const { n, m } = parsePrunePattern(args.pattern, '--pattern');
        print(await runCompression(toRunOptions(args as unknown as RunArgs, pruneRecipe(`${n}:${m}`, args.layout as PruneLayout))));
      },
    )
    .command(
      'lowrank <input>',
      'Low-rank factorization (W ≈ left · right, plain safetensors) of every matrix but norms, embedding and head',
      (y) =>
        runOptions(y.positional('input', { type: 'string', demandOption: true }))
          .option('rank', { type: 'number', describe: 'Rank of the factors' })
          .option('ratio', { type: 'number', describe: 'Parameter budget as a fraction of the original' })
          .check((a) => {
            const n = [a.rank, a.ratio].filter((x) => x !== undefined).length;
            if (n !== 1) throw new UsageError('give exactly one of --rank, --ratio');
            return true;
          }),
      async (args) => {
        const opts: Record<string, unknown> = {};
        if (args.rank !== undefined) opts.rank = args.rank;
        if (args.ratio !== undefined) opts.ratio = args.ratio;
        print(await runCompression(toRunOptions(args as unknown as RunArgs, lowrankRecipe(opts))));
      },
    )
    .command(
      'compress <input>',
      'Compress a model with a recipe file (JSON rules) or a preset',
      (y) =>
        targetOption(runOptions(y.positional('input', { type: 'string', demandOption: true })))
          .option('recipe', { alias: 'r', type: 'string', describe: 'Recipe file (JSON)' })
          .option('preset', { alias: 'p', type: 'string', choices: PRESET_NAMES, describe: 'A built-in recipe instead of a file' })
          .check((a) => {
            if ((a.recipe === undefined) === (a.preset === undefined)) throw new UsageError('give one of --recipe <file> or --preset <name>');
            return true;
          }),
      async (args) => {
        const recipe = args.recipe !== undefined ? await readRecipeFile(args.recipe) : (args.preset as string);
        print(await runCompression(toRunOptions(args as unknown as RunArgs, recipe)));
      },
    )
    .command(
      'report <original> <compressed>',
      'Per-tensor error (RMSE, SQNR, cosine) and size of a compressed model against its original',
      (y) =>
        y
          .positional('original', { type: 'string', demandOption: true })
          .positional('compressed', { type: 'string', demandOption: true })
          .option('html', { type: 'string', describe: 'Also write a self-contained HTML page with charts' })
          .option('json', { type: 'boolean', default: false, describe: 'Print as JSON' }),
      async (args) => print(await report(args.original, args.compressed, args.html, args.json)),
    )
    .command(
      'presets',
      'List the built-in recipes',
      (y) => y.option('json', { type: 'boolean', default: false, describe: 'Print the recipes as JSON' }),
      (args) => print(presets(args.json)),
    )
    .command(
      'demo',
      'Quantize every 2-D tensor of a GGUF model to each format and compare sizes and errors',
      (y) =>
        y
          .option('model', { type: 'string', describe: 'GGUF file to use (default: the bundled stories260K.gguf)' })
          .option('formats', {
            type: 'string',
            array: true,
            describe: `Formats to run, comma-separated (default all): ${DEMO_PRESET_IDS.join(', ')}`,
            coerce: parseFormats,
          })
          .option('json', { type: 'boolean', default: false, describe: 'Print the measurements as JSON' }),
      async (args) => {
        const report = await runDemo({ model: args.model, formats: args.formats });
        process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : `${renderDemo(report)}\n`);
      },
    )
    .command(
      ['backends', 'info'],
      'Show the CPU kernel and features in use, and whether CUDA is available (and why not)',
      (y) => y.option('json', { type: 'boolean', default: false, describe: 'Print as JSON' }),
      (args) => printBackends(args.json),
    )
    .demandCommand(1, 'Name a command, e.g. `slimtensor demo`.')
    .strict()
    .help()
    .alias('h', 'help')
    // yargs reports both its own parse errors (msg) and errors thrown by
    // handlers or coerce functions (err) here; sort them into usage vs failure.
    // A coerce function's error arrives wrapped in yargs' own YError.
    .fail((msg: string | null, err: Error | null) => {
      if (err instanceof UsageError) throw err;
      if (err && err.name === 'YError') throw new UsageError(err.message);
      if (err) throw err;
      throw new UsageError(msg ?? 'invalid command line');
    });
}

/** Runs the CLI on `argv` (without node and the script) and resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const parser = buildParser(argv);
  try {
    await parser.parseAsync();
    return 0;
  } catch (e) {
    if (e instanceof Error && e.name === 'AbortError') {
      process.stderr.write(`slimtensor: ${e.message}\n`);
      return EXIT_INTERRUPTED;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`slimtensor: ${e.message}\nRun \`slimtensor --help\` for usage.\n`);
      return EXIT_USAGE;
    }
    if (e instanceof SlimTensorError) {
      process.stderr.write(`slimtensor: ${e.message} [${e.code}]\n`);
      return EXIT_ERROR;
    }
    const code = (e as NodeJS.ErrnoException | null)?.code;
    if (typeof code === 'string' && e instanceof Error) {
      // A system error (ENOENT, EACCES, ...): its message names the file.
      process.stderr.write(`slimtensor: ${e.message}\n`);
      return EXIT_ERROR;
    }
    process.stderr.write(`slimtensor: internal error (please report it):\n${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return EXIT_ERROR;
  }
}

if (require.main === module) {
  main(hideBin(process.argv)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`slimtensor: ${String(e)}\n`);
      process.exitCode = EXIT_ERROR;
    },
  );
}

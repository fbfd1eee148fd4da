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
import { CONVERT_MEMORY_LIMIT, convertRecipe, OUT_TYPES, type OutType } from '../convert/convert-model';
import { parsePrunePattern, PRESET_NAMES, PRUNE_LAYOUTS, pruneRecipe, TARGETS, type CalibrationSpec, type PruneLayout, type Target } from '../pipeline/recipe';
import { parseDuration, runSubmit, runWorker } from './queue-commands';
import { evalCommand, interruptible, runCommand, type ModelFlags } from './run-commands';
import { calibrateCommand } from './calibrate-command';

const EXIT_ERROR = 1;
const EXIT_USAGE = 2;

/** A command-line mistake: printed with the usage hint, exit code 2. */
class UsageError extends Error {}

/** A failure the command has already explained on stderr: exit code 1, nothing more printed. */
class ReportedFailure extends Error {}

/** A size or duration option, a usage error when malformed. */
function optionValue<T>(v: string | undefined, what: string, parse: (v: string, what: string) => T): T | undefined {
  if (v === undefined) return undefined;
  try {
    return parse(v, what);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** An integer option in min..max, a usage error otherwise. */
function intOption(v: number | undefined, what: string, min: number, max: number): number | undefined {
  if (v !== undefined && !(Number.isInteger(v) && v >= min && v <= max)) throw new UsageError(`${what} must be an integer in ${min}..${max}, got ${v}`);
  return v;
}

/** --redis, or $SLIMTENSOR_REDIS. */
function redisUrl(v: string | undefined): string {
  const url = v ?? process.env.SLIMTENSOR_REDIS;
  if (url === undefined || url === '') throw new UsageError('give --redis redis://HOST:PORT (or set SLIMTENSOR_REDIS)');
  return url;
}

/** Options of both queue commands. */
function queueOptions<T>(y: import('yargs').Argv<T>) {
  return y
    .option('redis', { type: 'string', describe: 'The Redis server holding the queue, redis://HOST:PORT[/DB] (default: $SLIMTENSOR_REDIS)' })
    .option('queue', { type: 'string', describe: 'Queue name (default slimtensor)' });
}

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

/** Options of the commands that run a model (eval, run, report --eval). */
function modelOptions<T>(y: import('yargs').Argv<T>) {
  return y
    .option('threads', { type: 'number', describe: 'Threads of the model (default: all cores)' })
    .option('context-size', { type: 'number', describe: "KV cache positions (default: the model's context, at most 4096)" })
    .option('kernel', { type: 'string', choices: ['auto', 'reference', 'avx2', 'avx512'], describe: 'Kernel set (default: the widest the CPU has)' })
    .option('activations', { type: 'string', choices: ['auto', 'f32'], describe: "auto: 8-bit activation blocks for quantized weights, as llama.cpp (default); f32: exact f32 activations" })
    .option('hparams', { type: 'string', describe: "A GGUF file giving the hyper-parameters of a folder written from it (llama.cpp's tensor names)" });
}

function modelFlags(a: { threads?: number; 'context-size'?: number; kernel?: string; activations?: string; hparams?: string }): ModelFlags {
  if (a.threads !== undefined && !(Number.isInteger(a.threads) && a.threads >= 1 && a.threads <= 1024)) throw new UsageError(`--threads must be an integer in 1..1024, got ${a.threads}`);
  const cs = a['context-size'];
  if (cs !== undefined && !(Number.isInteger(cs) && cs >= 1)) throw new UsageError(`--context-size must be a positive integer, got ${cs}`);
  return {
    ...(a.threads !== undefined ? { threads: a.threads } : {}),
    ...(cs !== undefined ? { contextSize: cs } : {}),
    ...(a.kernel !== undefined ? { kernel: a.kernel as ModelFlags['kernel'] } : {}),
    ...(a.activations !== undefined ? { activations: a.activations as 'auto' | 'f32' } : {}),
    ...(a.hparams !== undefined ? { hparams: a.hparams } : {}),
  };
}

function positiveInt(v: number | undefined, name: string): number | undefined {
  if (v !== undefined && !(Number.isInteger(v) && v >= 1)) throw new UsageError(`${name} must be a positive integer, got ${v}`);
  return v;
}

/** eval and calibrate read one of --text / --tokens, in chunks of --ctx, at most --chunks of them. */
function checkTokenInput(a: { text?: string | undefined; tokens?: string | undefined; ctx?: number | undefined; chunks?: number | undefined }): true {
  if ((a.text === undefined) === (a.tokens === undefined)) throw new UsageError('give one of --text FILE or --tokens FILE');
  positiveInt(a.ctx, '--ctx');
  positiveInt(a.chunks, '--chunks');
  return true;
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
  imatrix?: string | undefined;
  'calibrate-text'?: string | undefined;
  'calibrate-tokens'?: string | undefined;
  'calibrate-ctx'?: number | undefined;
  'calibrate-chunks'?: number | undefined;
  'calibrate-sequential'?: string | undefined;
}

/** --calibrate-*: calibration data for the activation-aware methods. */
function calibrateOptions<T>(y: import('yargs').Argv<T>) {
  return y
    .option('calibrate-text', { type: 'string', describe: "Calibration text file (UTF-8, tokenized by the model): the model runs over it and its layer inputs' statistics weight quantize as an imatrix, give prune Wanda scores and whiten lowrank (SVD-LLM / ASVD)" })
    .option('calibrate-tokens', { type: 'string', describe: 'Calibration token file (little-endian int32 ids) instead of text' })
    .option('calibrate-ctx', { type: 'number', describe: "Tokens per calibration chunk (default 512, at most the model's context)" })
    .option('calibrate-chunks', { type: 'number', describe: 'Most calibration chunks (default: all whole chunks)' })
    .option('calibrate-sequential', {
      type: 'string',
      choices: ['true', 'false', 'auto'],
      describe: "Calibrate block by block, each block compressed before the next is calibrated on its outputs (GPTQ's sequential mode, memory of one block): true, false, or auto (default: when the weights in f32 + the rules' Hessians exceed --memory)",
    })
    .check((a) => {
      if (a['calibrate-text'] !== undefined && a['calibrate-tokens'] !== undefined) throw new UsageError('give one of --calibrate-text, --calibrate-tokens');
      if (a['calibrate-sequential'] !== undefined && a['calibrate-text'] === undefined && a['calibrate-tokens'] === undefined) throw new UsageError('--calibrate-sequential needs --calibrate-text or --calibrate-tokens');
      for (const k of ['calibrate-ctx', 'calibrate-chunks'] as const) {
        const v = a[k];
        if (v !== undefined && !(Number.isSafeInteger(v) && v >= 1)) throw new UsageError(`--${k} must be an integer >= 1, got ${String(v)}`);
        if (v !== undefined && a['calibrate-text'] === undefined && a['calibrate-tokens'] === undefined) throw new UsageError(`--${k} needs --calibrate-text or --calibrate-tokens`);
      }
      return true;
    });
}

function calibrationOf(a: RunArgs): CalibrationSpec | undefined {
  if (a['calibrate-text'] === undefined && a['calibrate-tokens'] === undefined) return undefined;
  return {
    ...(a['calibrate-text'] !== undefined ? { text: a['calibrate-text'] } : {}),
    ...(a['calibrate-tokens'] !== undefined ? { tokens: a['calibrate-tokens'] } : {}),
    ...(a['calibrate-ctx'] !== undefined ? { ctx: a['calibrate-ctx'] } : {}),
    ...(a['calibrate-chunks'] !== undefined ? { chunks: a['calibrate-chunks'] } : {}),
    ...(a['calibrate-sequential'] !== undefined ? { sequential: a['calibrate-sequential'] === 'auto' ? ('auto' as const) : a['calibrate-sequential'] === 'true' } : {}),
  };
}

/** `--imatrix`: llama.cpp's importance matrix for the quantizers. */
function imatrixOption<T>(y: import('yargs').Argv<T>) {
  return y.option('imatrix', {
    type: 'string',
    describe: "llama.cpp importance matrix (llama-imatrix's .dat or GGUF file): llama.cpp's importance-weighted quantizers, as llama-quantize --imatrix; tensors it does not cover are quantized without it (listed)",
  });
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
    imatrix: a.imatrix,
    calibration: calibrationOf(a),
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
      `Quantize a model with a preset (${QUANTIZE_PRESETS.join(', ')}); a Hugging Face folder is converted to GGUF on the way for the GGUF presets`,
      (y) =>
        calibrateOptions(imatrixOption(targetOption(runOptions(y.positional('input', { type: 'string', demandOption: true, describe: 'GGUF file, .safetensors file or Hugging Face folder' })))))
          .option('preset', { alias: 'p', type: 'string', demandOption: true, choices: QUANTIZE_PRESETS, describe: 'The recipe to apply (GGUF: llama-quantize\'s file types; see `slimtensor presets`)' })
          .option('search', { type: 'string', choices: ['none', 'mse'], describe: 'Scale search (mse: slower, lower error)' }),
      async (args) => {
        const recipe = args.search === undefined ? args.preset : { extends: args.preset, search: args.search as 'none' | 'mse', name: `${args.preset}${args.search === 'mse' ? '-mse' : ''}` };
        print(await runCompression(toRunOptions(args as unknown as RunArgs, recipe)));
      },
    )
    .command(
      'convert <input>',
      "Convert a Hugging Face folder (Llama, Mistral, Qwen2, Qwen3) to a GGUF file llama.cpp, Ollama and node-llama-cpp load, as llama.cpp's convert_hf_to_gguf.py does: architecture metadata, tokenizer, GGUF tensor names and layouts",
      (y) =>
        runOptions(y.positional('input', { type: 'string', demandOption: true, describe: 'Hugging Face folder (config.json, tokenizer files, safetensors weights, sharded or not)' }))
          .option('outtype', {
            type: 'string',
            choices: OUT_TYPES,
            default: 'f16',
            describe: 'Type of the weights: f32, f16, bf16, q8_0, or auto (each matrix keeps its stored type); norms and biases are F32',
          })
          .option('memory', { type: 'string', describe: `Tensor buffer budget, e.g. 1GiB (default ${CONVERT_MEMORY_LIMIT / 1024 / 1024}MiB: a conversion waits on the disk, not on the cores; a larger tensor still runs, alone)` }),
      async (args) => {
        const outtype = args.outtype as OutType;
        const run = toRunOptions(args as unknown as RunArgs, convertRecipe(outtype));
        print(await runCompression({ ...run, memory: run.memory ?? CONVERT_MEMORY_LIMIT, measureError: run.measureError !== false && outtype === 'q8_0' }));
      },
    )
    .command(
      'prune <input>',
      'N:M structured sparsity by magnitude of every matrix but norms, embedding and head, the pruned weights written dense: a Hugging Face folder stays a Hugging Face folder, a GGUF file stays GGUF',
      (y) =>
        calibrateOptions(runOptions(y.positional('input', { type: 'string', demandOption: true, describe: 'GGUF file, .safetensors file or Hugging Face folder' })))
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
        calibrateOptions(runOptions(y.positional('input', { type: 'string', demandOption: true })))
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
        calibrateOptions(imatrixOption(targetOption(runOptions(y.positional('input', { type: 'string', demandOption: true })))))
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
      'worker',
      'Take compression jobs from a BullMQ queue on Redis and run them, until SIGTERM/SIGINT (running jobs then finish within --grace or go back to the queue)',
      (y) =>
        queueOptions(y)
          .option('concurrency', { type: 'number', describe: 'Jobs at once (default 1); also bounded by --memory' })
          .option('memory', { type: 'string', describe: "Tensor buffer budget of all running jobs, e.g. 8GiB; a job's memory limit counts against it (default: half the machine's memory)" })
          .option('threads', { type: 'number', describe: 'Threads per operation for jobs that do not set theirs (default: all cores)' })
          .option('name', { type: 'string', describe: 'Worker name in logs and job results (default HOST:PID)' })
          .option('grace', { type: 'string', default: '30s', describe: 'On SIGTERM/SIGINT: how long running jobs get to finish before they are aborted and returned to the queue' })
          .option('lock-duration', { type: 'string', describe: "BullMQ lockDuration: a job whose worker stops renewing its lock this long (it died) is stalled and handed to another worker (default 30s)" })
          .option('stalled-interval', { type: 'string', describe: 'BullMQ stalledInterval: how often to look for stalled jobs (default 30s)' })
          .option('max-stalled', { type: 'number', describe: 'Stalls (worker deaths) a job survives before it fails (default 2)' })
          .option('max-backoff', { type: 'string', describe: 'Longest wait between attempts to reach Redis while it is unavailable (default 2s)' }),
      async (args) => {
        await runWorker({
          redis: redisUrl(args.redis),
          queue: args.queue,
          concurrency: intOption(args.concurrency, '--concurrency', 1, 1024),
          memory: optionValue(args.memory, '--memory', parseSize),
          threads: intOption(args.threads, '--threads', 1, 1024),
          name: args.name,
          graceMs: optionValue(args.grace, '--grace', parseDuration) as number,
          lockDurationMs: optionValue(args['lock-duration'], '--lock-duration', parseDuration),
          stalledIntervalMs: optionValue(args['stalled-interval'], '--stalled-interval', parseDuration),
          maxStalled: intOption(args['max-stalled'], '--max-stalled', 1, 1000),
          maxBackoffMs: optionValue(args['max-backoff'], '--max-backoff', parseDuration),
        });
      },
    )
    .command(
      'submit <inputs..>',
      'Add compression jobs to a BullMQ queue on Redis, one per input and preset (paths must be on storage every worker sees); --wait follows them',
      (y) =>
        targetOption(queueOptions(y.positional('inputs', { type: 'string', array: true, demandOption: true, describe: 'GGUF files, .safetensors files or Hugging Face folders' })))
          .option('output', { alias: 'o', type: 'string', demandOption: true, describe: "Output path; {preset} is replaced by the preset's name, {name} by the input's name without extension (needed with several presets or inputs)" })
          .option('preset', { alias: 'p', type: 'string', array: true, choices: PRESET_NAMES, describe: 'A built-in recipe; repeat for several outputs' })
          .option('recipe', { alias: 'r', type: 'string', describe: 'Recipe file (JSON) instead of presets' })
          .option('force', { alias: 'f', type: 'boolean', default: false, describe: 'Replace existing outputs (else a complete output is not redone)' })
          .option('memory', { type: 'string', describe: "Each job's tensor buffer budget, e.g. 2GiB (default 1GiB); counts against the worker's --memory" })
          .option('threads', { type: 'number', describe: 'Threads per operation (default: the worker\'s)' })
          .option('shard-size', { type: 'string', describe: 'safetensors outputs: largest shard, e.g. 5GB' })
          .option('attempts', { type: 'number', describe: "Tries per job for failures that may pass (I/O errors); bad inputs fail at once, and a worker's death is counted by the worker's --max-stalled instead (default 3)" })
          .option('priority', { type: 'number', describe: 'BullMQ priority, 1 = highest' })
          .option('wait', { type: 'boolean', default: false, describe: 'Follow the jobs (progress on stderr) and print their reports or errors' })
          .option('json', { type: 'boolean', default: false, describe: 'Print the jobs (or with --wait, the results) as JSON' })
          .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'No progress output' })
          .option('verbose', { alias: 'v', type: 'boolean', default: false, describe: 'List every tensor in the reports' })
          .check((a) => {
            if ((a.recipe === undefined) === (a.preset === undefined)) throw new UsageError('give --preset <name> (one or more) or --recipe <file>');
            return true;
          }),
      async (args) => {
        const recipes = args.recipe !== undefined ? [await readRecipeFile(args.recipe)] : (args.preset as string[]);
        let r: { text: string; failed: number };
        try {
          r = await runSubmit({
            redis: redisUrl(args.redis),
            queue: args.queue,
            inputs: args.inputs as string[],
            output: args.output,
            recipes,
            target: args.target as Target | undefined,
            shardSize: optionValue(args['shard-size'], '--shard-size', parseSize),
            memory: optionValue(args.memory, '--memory', parseSize),
            threads: intOption(args.threads, '--threads', 1, 1024),
            force: args.force,
            attempts: intOption(args.attempts, '--attempts', 1, 100),
            priority: intOption(args.priority, '--priority', 1, 2 ** 21),
            wait: args.wait,
            json: args.json,
            quiet: args.quiet,
            verbose: args.verbose,
          });
        } catch (e) {
          // Mistakes in -o templates are usage errors.
          if (e instanceof SlimTensorError && e.message.startsWith('-o ')) throw new UsageError(e.message);
          throw e;
        }
        if (r.text !== '') print(r.text);
        if (r.failed > 0) throw new ReportedFailure(`${r.failed} job${r.failed === 1 ? '' : 's'} failed`);
      },
    )
    .command(
      'report <original> <compressed>',
      'Per-tensor error (RMSE, SQNR, cosine) and size of a compressed model against its original; with --eval, perplexity and KL divergence on a token file',
      (y) =>
        modelOptions(
          y
            .positional('original', { type: 'string', demandOption: true })
            .positional('compressed', { type: 'string', demandOption: true })
            .option('html', { type: 'string', describe: 'Also write a self-contained HTML page with charts' })
            .option('json', { type: 'boolean', default: false, describe: 'Print as JSON' })
            .option('eval', { type: 'string', describe: 'Token file (little-endian int32 ids): run both models, add perplexity, KL divergence and top-1 agreement' })
            .option('ctx', { type: 'number', describe: 'With --eval: tokens per chunk (default 512, at most the context)' })
            .option('chunks', { type: 'number', describe: 'With --eval: most chunks to evaluate' }),
        ),
      async (args) => {
        const evalOpts = args.eval === undefined ? undefined : { tokens: args.eval, ...modelFlags(args), ...(positiveInt(args.ctx, '--ctx') !== undefined ? { ctx: args.ctx as number } : {}), ...(positiveInt(args.chunks, '--chunks') !== undefined ? { chunks: args.chunks as number } : {}) };
        print(await report(args.original, args.compressed, args.html, args.json, evalOpts));
      },
    )
    .command(
      'eval <model>',
      "Perplexity of a model on a token file as llama.cpp's llama-perplexity computes it; with --base, KL divergence, top-1 agreement and ΔPPL against a base model",
      (y) =>
        modelOptions(
          y
            .positional('model', { type: 'string', demandOption: true, describe: 'GGUF file or Hugging Face folder (plain, compressed-tensors, 2:4)' })
            .option('text', { type: 'string', describe: 'Text file to evaluate (needs a tokenizer)' })
            .option('tokens', { type: 'string', describe: 'Token file: little-endian int32 ids' })
            .option('ctx', { type: 'number', default: 512, describe: 'Tokens per chunk; the second half of each is scored' })
            .option('chunks', { type: 'number', describe: 'Most chunks to evaluate (default: all)' })
            .option('base', { type: 'string', describe: 'The model to compare with (e.g. the uncompressed original)' })
            .option('json', { type: 'boolean', default: false, describe: 'Print as JSON' })
            .check(checkTokenInput),
        ),
      async (args) =>
        print(
          await interruptible((signal) =>
            evalCommand({
              model: args.model,
              ...modelFlags(args),
              ...(args.text !== undefined ? { text: args.text } : {}),
              ...(args.tokens !== undefined ? { tokens: args.tokens } : {}),
              ctx: args.ctx,
              ...(args.chunks !== undefined ? { chunks: args.chunks } : {}),
              ...(args.base !== undefined ? { base: args.base } : {}),
              json: args.json,
              signal,
            }),
          ),
        ),
    )
    .command(
      'calibrate <model>',
      "Run a model over calibration text or tokens and write llama.cpp's importance matrix (imatrix, as llama-imatrix computes it) for llama-quantize --imatrix or slimtensor quantize --imatrix; block by block when the weights exceed the memory budget",
      (y) =>
        modelOptions(
          y
            .positional('model', { type: 'string', demandOption: true, describe: 'GGUF file or Hugging Face folder' })
            .option('text', { type: 'string', describe: 'Calibration text file (UTF-8, tokenized by the model with BOS as its vocabulary asks)' })
            .option('tokens', { type: 'string', describe: 'Calibration token file: little-endian int32 ids' })
            .option('ctx', { type: 'number', describe: "Tokens per chunk (default 512, at most the model's context); each chunk starts with BOS as llama-imatrix's" })
            .option('chunks', { type: 'number', describe: 'Most chunks (default: every whole chunk)' })
            .option('imatrix', { alias: 'o', type: 'string', demandOption: true, describe: 'Output file' })
            .option('format', { type: 'string', choices: ['gguf', 'dat'], describe: "gguf (llama.cpp since mid-2025) or dat (the legacy form older llama-quantize reads); default: dat for a .dat name, else gguf" })
            .option('memory-budget', { type: 'string', describe: 'Largest weights run as a whole model, e.g. 8GiB (default: half the physical memory); above it, one block at a time' })
            .option('sequential', { type: 'boolean', default: false, describe: 'Run block by block whatever the size' })
            .option('force', { alias: 'f', type: 'boolean', default: false, describe: 'Replace an existing output' })
            .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'No progress output' })
            .option('json', { type: 'boolean', default: false, describe: 'Print the summary as JSON' })
            .check(checkTokenInput),
        ),
      async (args) =>
        print(
          await interruptible((signal) =>
            calibrateCommand({
              model: args.model,
              ...modelFlags(args),
              ...(args.text !== undefined ? { text: args.text } : {}),
              ...(args.tokens !== undefined ? { tokens: args.tokens } : {}),
              ...(args.ctx !== undefined ? { ctx: args.ctx } : {}),
              ...(args.chunks !== undefined ? { chunks: args.chunks } : {}),
              imatrix: args.imatrix,
              ...(args.format !== undefined ? { format: args.format as 'gguf' | 'dat' } : {}),
              ...(args['memory-budget'] !== undefined ? { memoryBudget: parseSize(args['memory-budget'], '--memory-budget') } : {}),
              sequential: args.sequential,
              force: args.force,
              json: args.json,
              ...(args.quiet ? {} : { progress: (line: string) => void process.stderr.write(`${line}\n`) }),
              signal,
            }),
          ),
        ),
    )
    .command(
      'run <model>',
      'Generate tokens after a prompt; prints them and the prompt and generation speed',
      (y) =>
        modelOptions(
          y
            .positional('model', { type: 'string', demandOption: true, describe: 'GGUF file or Hugging Face folder' })
            .option('prompt', { type: 'string', describe: 'Prompt text (needs a tokenizer)' })
            .option('prompt-tokens', { type: 'string', describe: 'Prompt as comma-separated token ids' })
            .option('n', { alias: 'max-tokens', type: 'number', default: 64, describe: 'Most tokens to generate' })
            .option('temp', { type: 'number', default: 0, describe: 'Sampling temperature (0: greedy)' })
            .option('top-k', { type: 'number', describe: 'Sample among the k most likely tokens (default 40)' })
            .option('top-p', { type: 'number', describe: 'Nucleus sampling threshold (default 0.95)' })
            .option('seed', { type: 'number', describe: 'Sampling seed' })
            .option('json', { type: 'boolean', default: false, describe: 'Print as JSON' })
            .check((a) => {
              if ((a.prompt === undefined) === (a['prompt-tokens'] === undefined)) throw new UsageError('give one of --prompt TEXT or --prompt-tokens ID,ID,...');
              return true;
            }),
        ),
      async (args) =>
        print(
          await interruptible((signal) =>
            runCommand({
              model: args.model,
              ...modelFlags(args),
              ...(args.prompt !== undefined ? { prompt: args.prompt } : {}),
              ...(args['prompt-tokens'] !== undefined ? { promptTokens: args['prompt-tokens'] } : {}),
              n: args.n,
              temp: args.temp,
              ...(args['top-k'] !== undefined ? { topK: args['top-k'] } : {}),
              ...(args['top-p'] !== undefined ? { topP: args['top-p'] } : {}),
              ...(args.seed !== undefined ? { seed: args.seed } : {}),
              json: args.json,
              signal,
            }),
          ),
        ),
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
    if (e instanceof ReportedFailure) return EXIT_ERROR;
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

#!/usr/bin/env node
// The `slimtensor` command. Exit codes: 0 success, 1 a failure (the
// SlimTensorError or I/O message is printed), 2 a usage error.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { backends } from '../backend';
import { DEMO_PRESET_IDS, runDemo, selectPresets } from '../demo';
import { SlimTensorError } from '../errors';
import { renderDemo } from './demo-output';

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

function buildParser(argv: string[]) {
  return yargs(argv)
    .scriptName('slimtensor')
    .usage('$0 <command> [options]')
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

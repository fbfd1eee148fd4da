// Where a compressed model goes: a temporary name beside the output, renamed
// into place when everything is written, and removed on failure or abort,
// so the output's folder is left as it was.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { SlimTensorError } from '../errors';

export interface StagedOutput {
  /** The final path. */
  output: string;
  /** The temporary file or folder being written. */
  tmp: string;
  /** Moves tmp into place (replacing the old output when overwrite was given). */
  commit(): Promise<void>;
  /** Removes tmp (and anything under it). Never throws. */
  discard(): Promise<void>;
}

/** Temporary names currently in use by this process (for a last-resort cleanup on a second Ctrl-C). */
export const LIVE_TEMPS = new Set<string>();

async function exists(p: string): Promise<boolean> {
  return fsp.lstat(p).then(
    () => true,
    () => false,
  );
}

/** The resolved real location of p when it exists (symlinks followed), else p resolved. */
async function real(p: string): Promise<string> {
  return fsp.realpath(p).catch(() => path.resolve(p));
}

/** Names the temporaries of `output` written under `tag` start with. */
function tempPrefix(output: string, tag: string): string {
  return `.${path.basename(output)}.slimtensor-${tag}-`;
}

/** A tag for temporary names: what `tempTag` accepts. */
export const TEMP_TAG = /^[A-Za-z0-9_]{1,64}$/;

/**
 * Removes the temporaries an earlier run with the same `tag` left beside
 * `output` (a process killed mid-write cannot remove its own), and returns
 * their paths. Only names made by stageOutput with that tag are touched.
 */
export async function removeTemps(output: string, tag: string): Promise<string[]> {
  const out = path.resolve(output);
  const dir = path.dirname(out);
  const prefix = tempPrefix(out, tag);
  const names = await fsp.readdir(dir).catch(() => [] as string[]);
  const stale = names.filter((n) => n.startsWith(prefix) && (n.endsWith('.tmp') || n.endsWith('.old'))).map((n) => path.join(dir, n));
  for (const p of stale) await fsp.rm(p, { recursive: true, force: true });
  return stale;
}

/**
 * Prepares `output` (a file or a folder) for writing through a temporary
 * name in the same folder. Refuses an existing output unless `overwrite`,
 * and an output that is or lies inside the input (undefined: an output
 * made from no file, e.g. statistics). `tag` (default: the process id)
 * goes into the temporary name, so removeTemps can find what a killed run
 * left.
 */
export async function stageOutput(output: string, kind: 'file' | 'folder', input: string | undefined, overwrite: boolean, tag = String(process.pid)): Promise<StagedOutput> {
  const out = path.resolve(output);
  const inp = input === undefined ? undefined : await real(input);
  const outReal = await real(out);
  if (inp !== undefined && (outReal === inp || outReal.startsWith(inp + path.sep))) {
    throw new SlimTensorError(`output ${output} is the input or inside it; write the compressed model elsewhere`, 'ERR_VALUE');
  }
  if (inp !== undefined && inp.startsWith(outReal + path.sep) && overwrite) {
    throw new SlimTensorError(`output ${output} contains the input; overwriting it would delete the input`, 'ERR_VALUE');
  }
  const parent = path.dirname(out);
  const pst = await fsp.stat(parent).catch(() => undefined);
  if (pst === undefined || !pst.isDirectory()) throw new SlimTensorError(`output ${output}: the folder ${parent} does not exist`, 'ERR_VALUE');
  if (await exists(out)) {
    if (!overwrite) throw new SlimTensorError(`output ${output} already exists; pass overwrite (CLI: --force) to replace it`, 'ERR_VALUE');
    const st = await fsp.lstat(out);
    if (kind === 'file' && st.isDirectory()) throw new SlimTensorError(`output ${output} is a folder; this recipe writes one GGUF file`, 'ERR_VALUE');
    if (kind === 'folder' && !st.isDirectory()) throw new SlimTensorError(`output ${output} is a file; this recipe writes a folder`, 'ERR_VALUE');
  }
  const unique = `${tempPrefix(out, tag)}${Math.random().toString(36).slice(2, 10)}`;
  const tmp = path.join(parent, `${unique}.tmp`);
  if (kind === 'folder') await fsp.mkdir(tmp);
  LIVE_TEMPS.add(tmp);
  const discard = async (): Promise<void> => {
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    LIVE_TEMPS.delete(tmp);
  };
  return {
    output: out,
    tmp,
    discard,
    async commit() {
      if (kind === 'folder' && (await exists(out))) {
        // rename() cannot replace a non-empty folder: move the old one aside first.
        const old = path.join(parent, `${unique}.old`);
        await fsp.rename(out, old);
        try {
          await fsp.rename(tmp, out);
        } catch (e) {
          await fsp.rename(old, out).catch(() => undefined);
          throw e;
        }
        await fsp.rm(old, { recursive: true, force: true });
      } else {
        await fsp.rename(tmp, out);
      }
      LIVE_TEMPS.delete(tmp);
    },
  };
}

/** Total bytes of a file or of every file under a folder. */
export async function sizeOnDisk(p: string): Promise<number> {
  const st = await fsp.lstat(p);
  if (!st.isDirectory()) return st.size;
  let total = 0;
  for (const e of await fsp.readdir(p)) total += await sizeOnDisk(path.join(p, e));
  return total;
}

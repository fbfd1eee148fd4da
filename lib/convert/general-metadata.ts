// The general.* metadata of a GGUF converted from a Hugging Face folder, as
// llama.cpp's converter (gguf-py's Metadata) finds it: the model card's
// front matter (README.md) first, then config.json's `_name_or_path` when it
// is a hub id, then the folder's name, each parsed into name, organization,
// basename, finetune, version and size label ("Meta-Llama-3-8B-Instruct" ->
// basename Meta-Llama-3, size label 8B, finetune Instruct); a size label
// nobody states comes from the parameter count ("0.6B", "135M"). The
// license comes from the model card.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { GGUFMetadataEntry } from '../formats/gguf';

/** Largest README.md read for its front matter. */
const MAX_CARD_BYTES = 4 * 1024 * 1024;

type CardValue = string | string[];

/**
 * The top-level scalars and lists of a model card's YAML front matter
 * (`key: value`, `key: [a, b]`, `key:` followed by `- item` lines). Nested
 * maps and anything else are skipped: general.* needs only flat fields.
 */
export function parseFrontMatter(text: string): Record<string, CardValue> {
  const lines = text.split(/\r?\n/);
  const out: Record<string, CardValue> = {};
  if (lines[0] !== '---') return out;
  const scalar = (raw: string): string => {
    let v = raw.trim();
    if ((v.startsWith('"') && v.endsWith('"') && v.length >= 2) || (v.startsWith("'") && v.endsWith("'") && v.length >= 2)) return v.slice(1, -1);
    const hash = v.search(/\s#/);
    if (hash >= 0) v = v.slice(0, hash).trim();
    return v;
  };
  let listKey: string | undefined;
  for (const line of lines.slice(1)) {
    if (line === '---') break;
    const item = /^\s*-\s+(.*)$/.exec(line);
    if (item !== null && listKey !== undefined) {
      (out[listKey] as string[]).push(scalar(item[1] as string));
      continue;
    }
    const kv = /^([A-Za-z0-9_.-]+):(?:\s+(.*))?$/.exec(line);
    if (kv === null) {
      if (!/^\s/.test(line)) listKey = undefined;
      continue;
    }
    const key = kv[1] as string;
    const value = (kv[2] ?? '').trim();
    listKey = undefined;
    if (value === '') {
      out[key] = [];
      listKey = key;
    } else if (value.startsWith('[') && value.endsWith(']')) {
      out[key] = value
        .slice(1, -1)
        .split(',')
        .map(scalar)
        .filter((s) => s !== '');
    } else {
      out[key] = scalar(value);
    }
  }
  return out;
}

/** Python's str.title() for a word whose letters are all lower case. */
function title(w: string): string {
  let prevLetter = false;
  let out = '';
  for (const ch of w) {
    const letter = ch.toLowerCase() !== ch.toUpperCase();
    out += letter && !prevLetter ? ch.toUpperCase() : ch;
    prevLetter = letter;
  }
  return out;
}

/** "meta-llama-3-8b" -> "Meta Llama 3 8b": words in lower case title-cased, versions and numbers kept. */
export function idToTitle(s: string): string {
  return s
    .trim()
    .replaceAll('-', ' ')
    .split(/\s+/)
    .filter((w) => w !== '')
    .map((w) => (w === w.toLowerCase() && w !== w.toUpperCase() && !/^(v\d+(?:\.\d+)*|\d.*)$/.test(w) ? title(w) : w))
    .join(' ');
}

/** Round half to even (Python's round()). */
function roundEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The parameter count in llama.cpp's notation: at least two significant digits, K/M/B/T ("0.6B", "8.0B", "135M"). */
export function sizeLabel(params: number): string {
  const [scaled, suffix] = params >= 1e12 ? [params * 1e-12, 'T'] : params >= 1e9 ? [params * 1e-9, 'B'] : params >= 1e6 ? [params * 1e-6, 'M'] : [params * 1e-3, 'K'];
  const digits = String(roundEven(scaled)).replace(/^0+/, '').length;
  return `${scaled.toFixed(Math.max(2 - digits, 0))}${suffix}`;
}

export interface ModelIdComponents {
  /** The model part of `org/model`. */
  fullName: string;
  org: string | undefined;
  basename: string | undefined;
  finetune: string | undefined;
  version: string | undefined;
  sizeLabel: string | undefined;
}

/** "7b1" -> "7.1B", "0_5b" -> "0.5B", "8b" -> "8B". */
function normalizeSize(label: string): string {
  let l = label.replaceAll('_', '.');
  if (/[0-9]$/.test(l)) l = `${l.slice(0, -2)}.${l.slice(-1)}${l.slice(-2, -1)}`;
  if (l.length > 1 && /[0-9]/.test(l.slice(-2, -1)) && /[kmbt]$/.test(l)) l = l.slice(0, -1) + l.slice(-1).toUpperCase();
  return l;
}

function sizeParams(label: string): number {
  const scale = ' KMBT'.indexOf(label.slice(-1));
  const n = Number(label.slice(0, -1));
  if (scale < 0 || label.slice(0, -1) === '' || !Number.isFinite(n)) return NaN;
  return n * 1000 ** scale;
}

/**
 * A model id (`org/Model-Name-7B-Instruct-v0.2` or a folder name) split the
 * way gguf-py does: each dash-separated part annotated as a version, a
 * quantization type, a size label (unless it is far from the real
 * parameter count: then it is a context length, a finetune), a known
 * finetune word, and the leading words as the basename.
 */
export function modelIdComponents(id: string, totalParams: number): ModelIdComponents {
  if (id.includes(' ')) return { fullName: id, org: undefined, basename: undefined, finetune: undefined, version: undefined, sizeLabel: undefined };
  const slash = id.indexOf('/');
  let org = slash >= 0 ? id.slice(0, slash) : undefined;
  const fullName = slash >= 0 ? id.slice(slash + 1) : id;
  if (org !== undefined && org.startsWith('.')) org = undefined;
  const parts = fullName.split('-').filter((p) => p !== '');
  const types = parts.map(() => new Set<'basename' | 'size' | 'finetune' | 'version' | 'type'>());
  const activeParams = (l: string): boolean => /^A\d+([._]\d+)?[KMBT]\d?$/i.test(l);
  parts.forEach((part, i) => {
    const t = types[i] as Set<'basename' | 'size' | 'finetune' | 'version' | 'type'>;
    if (/^(v|iter)?\d+([.]\d+)*$/i.test(part)) t.add('version');
    else if (/^(?:i?q\d(_\w)*|b?fp?(16|32))$/i.test(part)) {
      t.add('type');
      parts[i] = part.toUpperCase();
    } else if (i > 0 && /^(([A]|\d+[x])?\d+([._]\d+)?[KMBT]\d?|small|mini|medium|large|x?xl)$/i.test(part)) {
      let label = normalizeSize(part);
      if (totalParams !== 0) {
        const own = sizeParams(label);
        if (!Number.isNaN(own)) {
          const next = i + 1 < parts.length ? normalizeSize(parts[i + 1] as string) : undefined;
          const nextParams = next !== undefined ? sizeParams(next.slice(1)) : NaN;
          const followedByActive = next !== undefined && activeParams(next) && Math.abs(nextParams - Math.abs(totalParams)) <= Math.floor((7 * Math.abs(totalParams)) / 8);
          const far = totalParams < 0 ? own < Math.floor(Math.abs(totalParams) / 8) : Math.abs(own - totalParams) > Math.floor((7 * totalParams) / 8);
          if (!followedByActive && far) {
            t.add('finetune');
            label = label.slice(0, -1) + label.slice(-1).toLowerCase();
          }
        }
      }
      if (t.size === 0) t.add('size');
      parts[i] = label;
    } else if (i > 0 && /^(chat|instruct|vision|lora)$/i.test(part)) {
      t.add('finetune');
    }
  });
  // Word labels (small, large, ...) give way to a numeric one.
  if (parts.some((p, i) => types[i]?.has('size') && /[0-9]/.test(p))) {
    parts.forEach((p, i) => {
      if (types[i]?.has('size') && /^[A-Za-z]+$/.test(p)) types[i]?.delete('size');
    });
  }
  let atStart = true;
  parts.forEach((p, i) => {
    const t = types[i] as Set<string>;
    if (atStart && ((t.size === 0 && /^[A-Za-z]/.test(p)) || t.has('version'))) t.add('basename');
    else {
      atStart = false;
      if (t.size === 0) t.add('finetune');
    }
  });
  // A trailing version is not part of the basename.
  for (let i = parts.length - 1; i >= 0; i--) {
    const t = types[i] as Set<string>;
    if (t.has('basename') && t.size > 1) t.delete('basename');
    else break;
  }
  const join = (pick: (t: Set<string>) => boolean, dedupe = false): string | undefined => {
    let sel = parts.filter((_, i) => pick(types[i] as Set<string>));
    if (dedupe) sel = [...new Set(sel)];
    return sel.length === 0 ? undefined : sel.join('-');
  };
  let basename = join((t) => t.has('basename'));
  const size = join((t) => t.has('size'), true);
  const finetune = join((t) => t.has('finetune'));
  const version = join((t) => t.has('version') && !t.has('basename'));
  if (size === undefined && finetune === undefined && version === undefined) basename = undefined;
  return { fullName, org, basename, finetune, version, sizeLabel: size };
}

async function readModelCard(folder: string): Promise<Record<string, CardValue>> {
  const file = path.join(folder, 'README.md');
  const st = await fsp.stat(file).catch(() => undefined);
  if (st === undefined || !st.isFile() || st.size > MAX_CARD_BYTES) return {};
  return parseFrontMatter(await fsp.readFile(file, 'utf8'));
}

/**
 * general.type, name, version, organization, finetune, basename,
 * size_label and license (license_name, license_link) for a Hugging Face
 * folder with `totalParams` parameters in the converted file.
 */
export async function generalMetadata(folder: string, config: Record<string, unknown>, totalParams: number): Promise<GGUFMetadataEntry[]> {
  const card = await readModelCard(folder);
  const m: Partial<Record<'name' | 'version' | 'organization' | 'finetune' | 'basename' | 'size_label' | 'license' | 'license_name' | 'license_link', string>> = {};
  const fromCard = (key: keyof typeof m, ...cardKeys: string[]): void => {
    for (const k of cardKeys) {
      const v = card[k];
      if (m[key] === undefined && v !== undefined) m[key] = Array.isArray(v) ? v.join(',') : v;
    }
  };
  fromCard('name', 'name', 'model_name');
  fromCard('version', 'version', 'model_version');
  fromCard('organization', 'organization', 'model_organization');
  fromCard('finetune', 'finetune', 'model_finetune');
  fromCard('basename', 'basename', 'model_basename');
  fromCard('size_label', 'size_label', 'model_size_label');
  fromCard('license', 'license');
  fromCard('license_name', 'license_name');
  fromCard('license_link', 'license_link');
  const ids: string[] = [];
  const nameOrPath = config._name_or_path;
  if (typeof nameOrPath === 'string' && nameOrPath !== '' && nameOrPath.split('/').length <= 2) ids.push(nameOrPath);
  ids.push(path.basename(path.resolve(folder)));
  for (const id of ids) {
    const c = modelIdComponents(id, totalParams);
    m.name ??= idToTitle(c.fullName);
    if (c.org !== undefined) m.organization ??= idToTitle(c.org);
    m.basename ??= c.basename;
    m.finetune ??= c.finetune;
    m.version ??= c.version;
    m.size_label ??= c.sizeLabel;
  }
  if (m.size_label === undefined && totalParams > 0) m.size_label = sizeLabel(totalParams);
  const e: GGUFMetadataEntry[] = [{ key: 'general.type', type: 'string', value: 'model' }];
  for (const k of ['name', 'version', 'organization', 'finetune', 'basename', 'size_label', 'license', 'license_name', 'license_link'] as const) {
    const v = m[k];
    if (v !== undefined && v !== '') e.push({ key: `general.${k}`, type: 'string', value: v });
  }
  return e;
}

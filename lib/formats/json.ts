// JSON from files: JSON.parse itself is iterative, but what is done with the
// value afterwards (JSON.stringify, key sorting, walking nested sequences)
// recurses, so a file of arrays nested 100 000 deep would end in a stack
// overflow (a RangeError, not a SlimTensorError) far from the reader.
// Readers check the depth once, here. Real configs and tokenizers nest a
// handful of levels.

/** The deepest nesting of arrays/objects a JSON file slimtensor reads may have. */
export const MAX_JSON_DEPTH = 64;

/** Whether `v` nests arrays/objects more than `limit` deep (walked without recursion). */
export function jsonTooDeep(v: unknown, limit: number = MAX_JSON_DEPTH): boolean {
  const stack: [unknown, number][] = [[v, 0]];
  while (stack.length > 0) {
    const [x, d] = stack.pop() as [unknown, number];
    if (typeof x !== 'object' || x === null) continue;
    if (d + 1 > limit) return true;
    for (const c of Array.isArray(x) ? x : Object.values(x)) if (typeof c === 'object' && c !== null) stack.push([c, d + 1]);
  }
  return false;
}

/**
 * obj[key] = value as an own property, whatever the key: names come from
 * files, and a plain assignment of `__proto__` sets the object's prototype
 * instead (the key vanishes from JSON.stringify and Object.keys).
 */
export function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

// Concurrent reads of values sharing one uncached DEK (kms v1) or seed (kms v2) make one Decrypt
// call to the plugin, not one each.

/**
 * Returns `load` for a key: the first caller's call runs, later callers for the same key share its
 * promise until it settles (success or failure); the next call after that loads again.
 */
export function createSingleFlight<T>(): (key: string, load: () => Promise<T>) => Promise<T> {
  const pending = new Map<string, Promise<T>>();
  return (key, load) => {
    let p = pending.get(key);
    if (p === undefined) {
      p = load().finally(() => pending.delete(key));
      pending.set(key, p);
    }
    return p;
  };
}

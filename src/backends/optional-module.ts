// Backends whose implementation needs an optional npm package (pkcs11js is native: it is skipped
// where no compiler is available, or installed unbuilt with --ignore-scripts). Loading one turns a
// missing or unbuilt package into one clear error naming it, instead of a module-resolution trace.

import { createRequire } from 'node:module';
import { AtrestError } from '../errors.js';

function isUnavailable(err: unknown, pkg: string): boolean {
  const e = err as NodeJS.ErrnoException & { requireStack?: string[] };
  const inPackage = (s: string): boolean =>
    s.includes(`/node_modules/${pkg}/`) || s.includes(`'${pkg}'`) || s.includes(`"${pkg}"`);
  switch (e?.code) {
    case 'MODULE_NOT_FOUND': // not installed, or installed but its addon was never built
      return inPackage(String(e.message)) || (e.requireStack ?? []).some(inPackage);
    case 'ERR_DLOPEN_FAILED': // built for another Node.js
      return inPackage(String(e.message));
    default:
      return false;
  }
}

/**
 * Loads optional package `pkg` (CommonJS), then the backend module through `load`. The package is
 * required first, on its own: a failed require leaves nothing behind, whereas an ES module graph
 * whose CommonJS dependency throws also reports the error as uncaught. A missing or unbuilt `pkg`
 * becomes ERR_NOT_SUPPORTED naming it.
 */
export async function importWithOptional<T>(
  backend: string,
  pkg: string,
  load: () => Promise<T>,
): Promise<T> {
  try {
    createRequire(import.meta.url)(pkg);
  } catch (err) {
    if (!isUnavailable(err, pkg)) throw err;
    throw new AtrestError(
      'ERR_NOT_SUPPORTED',
      `--backend ${backend} needs the optional npm package "${pkg}", which is not installed or ` +
        `not built here (install it where a C++ compiler and Python are available: npm install ${pkg})`,
      { cause: err },
    );
  }
  return load();
}

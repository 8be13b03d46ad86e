// Errors become exit codes here and nowhere else.

import { AtrestError, ConfigInvalidError } from '../errors.js';

/**
 * 0 ok; 1 failure (etcd or a KMS plugin unreachable); 2 usage or invalid configuration; 3 found
 * problems (scan: plaintext/undecryptable; rewrite: not converged); 4 nothing matched (the prefix or a
 * selected resource holds no key: never reported as success unless --allow-empty).
 */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_FINDINGS = 3;
export const EXIT_EMPTY = 4;

export function exitCodeFor(err: unknown): number {
  if (err instanceof ConfigInvalidError) return EXIT_USAGE;
  if (err instanceof AtrestError && err.code === 'ERR_CONFIG_UNREADABLE') return EXIT_USAGE;
  if (err instanceof AtrestError && err.code === 'ERR_SELECTION_EMPTY') return EXIT_EMPTY;
  if (err instanceof AtrestError && err.code === 'ERR_APISERVER_KEY_ID') return EXIT_FINDINGS;
  return EXIT_FAILURE;
}

export function describeError(err: unknown): string {
  if (err instanceof AtrestError) return `${err.message} (${err.code})`;
  if (err instanceof Error) return err.message;
  return String(err);
}

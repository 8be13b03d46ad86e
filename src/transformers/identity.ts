// The identity "format": plaintext stored as is. Its read side refuses anything that looks encrypted,
// which is what makes "identity first" configurations fall through to the real providers.

import { FormatInvalidError } from '../errors.js';
import { asBuffer, startsWithBytes } from '../bytes.js';
import type { FromStorageResult, TransformContext, Transformer } from './transformer.js';

/** The reserved prefix of every encrypted value. */
export const ENCRYPTED_PREFIX = Buffer.from('k8s:enc:', 'latin1');

export function createIdentityTransformer(): Transformer {
  return {
    async transformToStorage(data: Uint8Array, _context: TransformContext): Promise<Buffer> {
      return Buffer.from(data);
    },
    async transformFromStorage(
      data: Uint8Array,
      _context: TransformContext,
    ): Promise<FromStorageResult> {
      if (startsWithBytes(data, ENCRYPTED_PREFIX)) {
        throw new FormatInvalidError(
          'ERR_FORMAT_PREFIX',
          'identity transformer tried to read encrypted data',
        );
      }
      // A view, not a copy (as upstream returns the same slice): no caller mutates what a read returns.
      return { data: asBuffer(data), stale: false };
    },
  };
}

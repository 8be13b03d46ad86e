// loadEncryptionConfiguration: the one file read of the config layer (everything else is pure).

import { readFile } from 'node:fs/promises';
import { AtrestError } from '../errors.js';
import { parseEncryptionConfiguration } from './parse.js';
import type { ConfigOptions, EncryptionConfiguration } from './types.js';

export async function loadEncryptionConfiguration(
  path: string,
  options: ConfigOptions = {},
): Promise<EncryptionConfiguration> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    const reason = (cause as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new AtrestError('ERR_CONFIG_UNREADABLE', `cannot read encryption configuration ${path} (${reason})`, {
      cause,
    });
  }
  return parseEncryptionConfiguration(text, path, options);
}

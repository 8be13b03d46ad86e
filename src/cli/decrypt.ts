// `atrest decrypt` (placeholder: registered by main.ts; replaced by its implementation).

import type { Command } from 'commander';

export function registerDecrypt(program: Command): void {

  program.command('decrypt').description('not implemented yet').action(() => {
    throw new Error('atrest decrypt is not implemented yet');
  });
}

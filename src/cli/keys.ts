// `atrest keys` (placeholder: registered by main.ts; replaced by its implementation).

import type { Command } from 'commander';

export function registerKeys(program: Command): void {

  program.command('keys').description('not implemented yet').action(() => {
    throw new Error('atrest keys is not implemented yet');
  });
}

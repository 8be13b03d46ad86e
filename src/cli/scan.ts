// `atrest scan` (placeholder: registered by main.ts; replaced by its implementation).

import type { Command } from 'commander';

export function registerScan(program: Command): void {

  program.command('scan').description('not implemented yet').action(() => {
    throw new Error('atrest scan is not implemented yet');
  });
}

// `atrest serve` (placeholder: registered by main.ts; replaced by its implementation).

import type { Command } from 'commander';

export function registerServe(program: Command, version: string): void {
  void version;
  program.command('serve').description('not implemented yet').action(() => {
    throw new Error('atrest serve is not implemented yet');
  });
}

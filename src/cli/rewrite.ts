// `atrest rewrite` (placeholder: registered by main.ts; replaced by its implementation).

import type { Command } from 'commander';

export function registerRewrite(program: Command): void {

  program.command('rewrite').description('not implemented yet').action(() => {
    throw new Error('atrest rewrite is not implemented yet');
  });
}

// Test helper: CPU burner processes (busy loops in child Node.js processes) that a test starts beside
// the code under test, so thread interleavings and event-loop delays look like a loaded control-plane
// node. stop() kills exactly the processes it started and waits for them to exit.

import { spawn, type ChildProcess } from 'node:child_process';

export interface CpuBurners {
  readonly count: number;
  stop(): Promise<void>;
}

export function startCpuBurners(count = 2): CpuBurners {
  const children: ChildProcess[] = [];
  for (let i = 0; i < count; i++) {
    children.push(spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
  }
  return {
    count,
    async stop() {
      await Promise.all(
        children.map((c) =>
          c.exitCode !== null || c.signalCode !== null
            ? undefined
            : new Promise<void>((resolve) => {
                c.once('exit', () => resolve());
                c.kill('SIGKILL');
              }),
        ),
      );
    },
  };
}

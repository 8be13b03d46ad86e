// A one-line progress bar on stderr for long etcd walks, drawn only when stderr is a terminal (so
// logs and pipes stay clean). Redraws at most ten times a second.

export interface Progress {
  update(done: number, total: number, detail?: string): void;
  /** Clears the line. */
  finish(): void;
}

export interface ProgressOptions {
  readonly stream?: NodeJS.WriteStream;
  readonly label: string;
  readonly now?: () => number;
  /** Draw even when the stream is not a TTY (tests). */
  readonly force?: boolean;
}

const WIDTH = 24;

export function formatProgress(label: string, done: number, total: number, perSecond: number, detail = ''): string {
  const rate = perSecond > 0 ? ` ${Math.round(perSecond)}/s` : '';
  const extra = detail ? ` ${detail}` : '';
  if (total <= 0) return `${label} ${done}${rate}${extra}`;
  const ratio = Math.min(1, done / total);
  const filled = Math.round(ratio * WIDTH);
  const bar = '#'.repeat(filled) + '.'.repeat(WIDTH - filled);
  return `${label} [${bar}] ${done}/${total} ${Math.floor(ratio * 100)}%${rate}${extra}`;
}

export function createProgress(options: ProgressOptions): Progress {
  const stream = options.stream ?? process.stderr;
  const now = options.now ?? (() => Date.now());
  const enabled = options.force === true || stream.isTTY === true;
  const started = now();
  let lastDraw = 0;
  let drawn = false;
  return {
    update(done, total, detail) {
      if (!enabled) return;
      const t = now();
      if (t - lastDraw < 100 && done < total) return;
      lastDraw = t;
      const secs = (t - started) / 1000;
      const line = formatProgress(options.label, done, total, secs > 0 ? done / secs : 0, detail);
      stream.write(`\r\x1b[2K${line}`);
      drawn = true;
    },
    finish() {
      if (enabled && drawn) stream.write('\r\x1b[2K');
      drawn = false;
    },
  };
}

// Output for every command: a human table on a terminal, `-o json` for machines.

export type OutputFormat = 'table' | 'json';

export function parseOutputFormat(s: string): OutputFormat {
  if (s === 'table' || s === 'json') return s;
  throw new TypeError(`unknown output format "${s}" (table or json)`);
}

/** Renders rows as an aligned text table with a header line. */
export function renderTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

export function renderJson(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}

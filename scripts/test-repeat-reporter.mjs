// node --test reporter for scripts/test-repeat.mjs: one JSON line per failed test (its file, the
// names from the outermost suite down, the first line of the error) and a final count line.
// Suites that failed only because a subtest failed are left out: the subtest is reported.

export default async function* repeatReporter(source) {
  let passed = 0;
  let failed = 0;
  const path = [];
  for await (const event of source) {
    const { type, data } = event;
    if (type === 'test:start') {
      path[data.nesting] = data.name;
      path.length = data.nesting + 1;
    } else if (type === 'test:pass') {
      if (data.details?.type !== 'suite') passed++;
    } else if (type === 'test:fail') {
      const error = data.details?.error;
      if (error?.failureType === 'subtestsFailed') continue;
      failed++;
      const names = [...path.slice(0, data.nesting), data.name];
      const cause = error?.cause ?? error;
      let message = String(cause?.message ?? cause ?? 'failed')
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l !== '' && !/^[+-] (actual|expected)/.test(l))
        .slice(0, 3)
        .join(' ');
      if (error?.exitCode !== undefined || error?.signal) {
        message += ` (the test process exited: ${error.signal ?? `code ${error.exitCode}`})`;
      }
      yield JSON.stringify({ file: data.file ?? '', test: names.join(' > '), error: message.slice(0, 400) }) + '\n';
    }
  }
  yield JSON.stringify({ summary: true, passed, failed }) + '\n';
}

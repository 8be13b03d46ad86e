// Durations as Go's time.ParseDuration reads them (`3s`, `1m30s`, `500ms`, `-1.5h`, `0`): the one
// parser for EncryptionConfiguration timeouts, backend settings and command-line flags, so that
// every place that takes a duration takes the same ones. Written from the Go documentation's grammar;
// the config parity tests compare verdicts with the real thing.

const UNIT_NS: Readonly<Record<string, number>> = {
  ns: 1,
  us: 1e3,
  'µs': 1e3, // U+00B5 micro sign
  'μs': 1e3, // U+03BC Greek mu
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

/** Go's int64 nanosecond range: a duration beyond ~292 years is an error there too. */
const MAX_NS = 9223372036854775807;

/**
 * Parses a Go duration (`3s`, `1m30s`, `500ms`, `-1.5h`, `0`) into nanoseconds.
 * Returns undefined when Go would reject it.
 */
export function parseGoDuration(text: string): number | undefined {
  let s = text;
  let sign = 1;
  if (s.startsWith('-') || s.startsWith('+')) {
    if (s[0] === '-') sign = -1;
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (s === '') return undefined;
  let total = 0;
  const part = /^(\d*)(?:\.(\d*))?([^\d.]+)/;
  while (s !== '') {
    const m = part.exec(s);
    if (m === null) return undefined;
    const [whole, intPart = '', fracPart, unitAndRest = ''] = m;
    if (intPart === '' && (fracPart === undefined || fracPart === '')) return undefined;
    // the unit runs until the next digit or dot
    const unit = unitAndRest;
    const scale = UNIT_NS[unit];
    if (scale === undefined) return undefined;
    const value = Number(`${intPart === '' ? '0' : intPart}.${fracPart ?? '0'}`);
    total += value * scale;
    if (total > MAX_NS) return undefined;
    s = s.slice(whole.length);
  }
  return sign * total;
}

/** A positive Go duration in milliseconds; undefined for anything else (zero and negatives too). */
export function parsePositiveDurationMs(text: string): number | undefined {
  const ns = parseGoDuration(text.trim());
  return ns === undefined || ns <= 0 ? undefined : ns / 1e6;
}

// A minimal Prometheus registry (counters, gauges, histograms) rendered in the text exposition
// format 0.0.4. Label sets are fixed per metric and every label value comes from a bounded set chosen
// by the caller (never a uid or a raw key id).

type Labels = Readonly<Record<string, string>>;

interface Metric {
  render(): string;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labelText(names: readonly string[], values: readonly string[], extra?: string): string {
  const parts = names.map((n, i) => `${n}="${escapeLabel(values[i] ?? '')}"`);
  if (extra !== undefined) parts.push(extra);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

function formatNumber(n: number): string {
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return Number.isInteger(n) ? String(n) : String(Number(n.toPrecision(12)));
}

/**
 * The series key for a label set, on the hot path of every RPC: one string concatenation, no
 * allocation beyond it. Unexpected label names are checked only when a new series is created.
 */
function seriesKey(names: readonly string[], labels: Labels): string {
  let key = '';
  for (const n of names) key += (labels[n] ?? '') + '\u0000';
  return key;
}

function labelValues(names: readonly string[], labels: Labels): string[] {
  const extra = Object.keys(labels).filter((k) => !names.includes(k));
  if (extra.length > 0) throw new TypeError(`unexpected labels ${extra.join(',')}`);
  return names.map((n) => labels[n] ?? '');
}

export interface Counter {
  inc(labels?: Labels, by?: number): void;
  /** The series of one label set, looked up once: for a caller on the hot path that caches it. */
  series(labels?: Labels): { inc(by?: number): void };
}

export interface Gauge {
  set(value: number, labels?: Labels): void;
  /** Drops every series (used when a label value is replaced, e.g. the active key hash). */
  reset(): void;
}

export interface Histogram {
  observe(value: number, labels?: Labels): void;
  /** The series of one label set, looked up once (see Counter.series). */
  series(labels?: Labels): { observe(value: number): void };
}

export interface Registry {
  counter(name: string, help: string, labelNames?: readonly string[]): Counter;
  gauge(name: string, help: string, labelNames?: readonly string[]): Gauge;
  /** `collect` is called at scrape time (e.g. process CPU seconds). */
  gaugeFunc(name: string, help: string, collect: () => number): void;
  counterFunc(name: string, help: string, collect: () => number): void;
  histogram(
    name: string,
    help: string,
    buckets: readonly number[],
    labelNames?: readonly string[],
  ): Histogram;
  render(): string;
}

/** Seconds: 0.5 ms … 10 s, covering the 10 ms Decrypt / 100 ms Encrypt targets upstream names. */
export const LATENCY_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
] as const;

interface HistogramSeries {
  readonly labels: string[];
  readonly counts: number[];
  sum: number;
  count: number;
}

export function createRegistry(): Registry {
  const metrics: Metric[] = [];

  function series(name: string, help: string, type: string, labelNames: readonly string[]) {
    const values = new Map<string, { labels: string[]; value: number }>();
    const header = `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`;
    metrics.push({
      render: () =>
        header +
        [...values.values()]
          .map((s) => `${name}${labelText(labelNames, s.labels)} ${formatNumber(s.value)}\n`)
          .join(''),
    });
    return {
      get(labels: Labels) {
        const id = seriesKey(labelNames, labels);
        let s = values.get(id);
        if (s === undefined) {
          s = { labels: labelValues(labelNames, labels), value: 0 };
          values.set(id, s);
        }
        return s;
      },
      clear: () => values.clear(),
    };
  }

  return {
    counter(name, help, labelNames = []) {
      const s = series(name, help, 'counter', labelNames);
      return {
        inc(labels = {}, by = 1) {
          s.get(labels).value += by;
        },
        series(labels = {}) {
          // Counters are never cleared, so the series object stays the one rendered.
          const one = s.get(labels);
          return {
            inc(by = 1) {
              one.value += by;
            },
          };
        },
      };
    },
    gauge(name, help, labelNames = []) {
      const s = series(name, help, 'gauge', labelNames);
      return {
        set(value, labels = {}) {
          s.get(labels).value = value;
        },
        reset: s.clear,
      };
    },
    gaugeFunc(name, help, collect) {
      metrics.push({
        render: () =>
          `# HELP ${name} ${help}\n# TYPE ${name} gauge\n${name} ${formatNumber(collect())}\n`,
      });
    },
    counterFunc(name, help, collect) {
      metrics.push({
        render: () =>
          `# HELP ${name} ${help}\n# TYPE ${name} counter\n${name} ${formatNumber(collect())}\n`,
      });
    },
    histogram(name, help, buckets, labelNames = []) {
      const values = new Map<string, HistogramSeries>();
      metrics.push({
        render() {
          let out = `# HELP ${name} ${help}\n# TYPE ${name} histogram\n`;
          for (const s of values.values()) {
            // counts are per bucket (not cumulative) so observe() stops at the first match
            let cumulative = 0;
            buckets.forEach((le, i) => {
              cumulative += s.counts[i]!;
              out += `${name}_bucket${labelText(labelNames, s.labels, `le="${formatNumber(le)}"`)} ${cumulative}\n`;
            });
            out += `${name}_bucket${labelText(labelNames, s.labels, 'le="+Inf"')} ${s.count}\n`;
            out += `${name}_sum${labelText(labelNames, s.labels)} ${formatNumber(s.sum)}\n`;
            out += `${name}_count${labelText(labelNames, s.labels)} ${s.count}\n`;
          }
          return out;
        },
      });
      const get = (labels: Labels): HistogramSeries => {
        const id = seriesKey(labelNames, labels);
        let s = values.get(id);
        if (s === undefined) {
          s = { labels: labelValues(labelNames, labels), counts: buckets.map(() => 0), sum: 0, count: 0 };
          values.set(id, s);
        }
        return s;
      };
      const observe = (s: HistogramSeries, value: number): void => {
        for (let i = 0; i < buckets.length; i++) {
          if (value <= buckets[i]!) {
            s.counts[i]! += 1;
            break;
          }
        }
        s.sum += value;
        s.count += 1;
      };
      return {
        observe(value, labels = {}) {
          observe(get(labels), value);
        },
        series(labels = {}) {
          // Histograms are never cleared, so the series object stays the one rendered.
          const one = get(labels);
          return { observe: (value: number) => observe(one, value) };
        },
      };
    },
    render: () => metrics.map((m) => m.render()).join(''),
  };
}

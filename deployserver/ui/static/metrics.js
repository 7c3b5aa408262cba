// The server's own Prometheus text (GET /metrics), read in the browser: requests and
// latency through /serve per model, the same figures a Prometheus scrape sees.

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parsePrometheus(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(LINE);
    if (!m) continue;
    const labels = {};
    for (const [, key, value] of (m[3] || "").matchAll(LABEL)) {
      labels[key] = value.replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
    }
    samples.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return samples;
}

/** The quantile ``q`` of a cumulative histogram, interpolated within its bucket. */
export function quantile(q, buckets) {
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  const total = sorted.length ? sorted[sorted.length - 1].count : 0;
  if (!total) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const { le, count } of sorted) {
    if (count >= rank) {
      if (!Number.isFinite(le)) return prevLe;
      const inBucket = count - prevCount;
      return prevLe + (le - prevLe) * (inBucket ? (rank - prevCount) / inBucket : 0);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

/** Per model: {requests, errors (5xx), meanSeconds, p95Seconds}. */
export function serveFigures(text) {
  const by = new Map();
  const get = (model) => {
    if (!by.has(model)) by.set(model, { requests: 0, errors: 0, sum: 0, count: 0, buckets: [] });
    return by.get(model);
  };
  for (const s of parsePrometheus(text)) {
    const model = s.labels.model;
    if (model === undefined) continue;
    if (s.name === "deployserver_serve_requests_total") {
      get(model).requests += s.value;
      if (/^5/.test(s.labels.status || "")) get(model).errors += s.value;
    } else if (s.name === "deployserver_serve_latency_seconds_sum") {
      get(model).sum = s.value;
    } else if (s.name === "deployserver_serve_latency_seconds_count") {
      get(model).count = s.value;
    } else if (s.name === "deployserver_serve_latency_seconds_bucket") {
      const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
      get(model).buckets.push({ le, count: s.value });
    }
  }
  const out = new Map();
  for (const [model, f] of by) {
    out.set(model, {
      requests: f.requests,
      errors: f.errors,
      meanSeconds: f.count ? f.sum / f.count : null,
      p95Seconds: quantile(0.95, f.buckets),
    });
  }
  return out;
}

export function fmtLatency(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return seconds < 1 ? `${(seconds * 1000).toFixed(seconds < 0.01 ? 1 : 0)} ms` : `${seconds.toFixed(2)} s`;
}

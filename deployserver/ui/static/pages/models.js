// Models: each with its active version, status, replicas where the server keeps them, and
// its requests and latency through /serve (from the server's /metrics); a filter box.

import { auth, call, debounce, live } from "../api.js";
import { badge, clear, field, h, link, notice, table, timeAgo, fill } from "../dom.js";
import { fmtLatency, serveFigures } from "../metrics.js";

const METRICS_EVERY_MS = 15000;

export default async function models(main) {
  const filter = h("input", { type: "search", name: "filter", placeholder: "name or status", autocomplete: "off" });
  const body = h("div", { class: "models-body", "aria-live": "polite", "aria-busy": "true" });
  fill(main,
    h("div", { class: "page-head" },
      h("h1", {}, "Models"),
      auth.can("deploy") ? link("/ui/new", "New deployment", { class: "btn btn-primary" }) : null),
    h("div", { class: "toolbar" }, field("Filter models", filter)),
    body);

  let items = [];
  let records = new Map();
  let figures = new Map();
  let metricsNote = null;

  async function loadMetrics() {
    try {
      figures = serveFigures(await call("/metrics", { as: "text" }));
      metricsNote = null;
    } catch (err) {
      metricsNote = `Requests and latency are not shown: ${err.message}`;
    }
  }

  async function load() {
    const [list] = await Promise.all([call("/api/v1/models"), loadMetrics()]);
    items = list.items;
    const active = items.filter((m) => m.active_deploy_id).slice(0, 100);
    const got = await Promise.all(active.map((m) =>
      call(`/api/v1/deployments/${encodeURIComponent(m.active_deploy_id)}`).catch(() => null)));
    records = new Map(got.filter(Boolean).map((r) => [r.deploy_id, r]));
    draw();
  }

  function draw() {
    body.removeAttribute("aria-busy");
    const words = filter.value.trim().toLowerCase();
    const shown = items.filter((m) => {
      const status = statusOf(m);
      return !words || m.name.includes(words) || status.includes(words);
    });
    const withReplicas = [...records.values()].some((r) => r.replicas);
    const head = ["Model", "Active version", "Status"];
    if (withReplicas) head.push("Replicas");
    head.push("Requests", "Errors (5xx)", "Mean latency", "p95 latency", "Last upload");
    const rows = shown.map((m) => {
      const activeVersion = m.versions.find((v) => v.deploy_id === m.active_deploy_id);
      const record = records.get(m.active_deploy_id);
      const f = figures.get(m.name);
      const cells = [
        link(`/ui/models/${encodeURIComponent(m.name)}`, m.name, { class: "strong" }),
        activeVersion ? `v${activeVersion.version}` : h("span", { class: "muted" }, "none"),
        h("span", {}, badge(statusOf(m)), newer(m)),
      ];
      if (withReplicas) {
        cells.push(record && record.replicas ? `${record.replicas.ready} of ${record.replicas.desired}` : "–");
      }
      cells.push(
        f ? String(f.requests) : "0",
        f ? String(f.errors) : "0",
        f ? fmtLatency(f.meanSeconds) : "–",
        f ? fmtLatency(f.p95Seconds) : "–",
        m.versions.length ? timeAgo(m.versions[0].created_at) : "",
      );
      return cells;
    });
    clear(body);
    if (metricsNote) body.append(notice(metricsNote, "info"));
    if (!items.length) {
      body.append(h("div", { class: "panel empty-state" },
        h("h2", {}, "No models yet"),
        h("p", {}, "Upload a folder with a scoring script, or push one from the command line:"),
        h("pre", { class: "code" }, "deployserver init sentiment --template python\ndeployserver push sentiment --wait"),
        auth.can("deploy") ? link("/ui/new", "Upload a model", { class: "btn btn-primary" }) : null));
      return;
    }
    body.append(table(head, rows, { caption: "Models", empty: `No model matches “${filter.value}”.` }));
  }

  /** A newer version that is not the active one (rising, or failed while the old serves). */
  function newer(m) {
    const latest = m.versions[0];
    if (!latest || !m.active_deploy_id || latest.deploy_id === m.active_deploy_id) return null;
    const active = m.versions.find((v) => v.deploy_id === m.active_deploy_id);
    if (active && active.version > latest.version) return null;
    return h("span", { class: `tag tag-${latest.status}` }, `v${latest.version} ${latest.status}`);
  }

  function statusOf(m) {
    const active = m.versions.find((v) => v.deploy_id === m.active_deploy_id);
    const record = records.get(m.active_deploy_id);
    if (record) return record.status;
    if (active) return active.status;
    return m.versions.length ? m.versions[0].status : "none";
  }

  filter.addEventListener("input", draw);
  try {
    await load();
  } catch (err) {
    body.replaceChildren(notice(`The models could not be read: ${err.message}`));
  }
  const reload = debounce(() => load().catch(() => {}), 300);
  const off = live.on(reload);
  const timer = setInterval(() => loadMetrics().then(draw), METRICS_EVERY_MS);
  return () => {
    off();
    clearInterval(timer);
  };
}

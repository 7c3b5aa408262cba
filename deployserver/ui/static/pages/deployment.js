// One deployment: its status and reason in words, the events timeline (pushed live), its
// logs (followed), files with size and sha256, metadata (env values never shown), cell.

import { call, debounce, live } from "../api.js";
import { deploymentActions } from "../actions.js";
import { badge, clear, fmtBytes, fmtTime, h, link, notice, statusWords, table, timeAgo, fill } from "../dom.js";

const LOG_EVERY_MS = 2000;
const SETTLED = ["ready", "failed", "stopped"];

function metadataView(meta) {
  const { env, ...rest } = meta || {};
  const keys = env && typeof env === "object" ? Object.keys(env) : [];
  return [
    h("pre", { class: "code" }, JSON.stringify(rest, null, 2)),
    h("p", { class: "hint" }, keys.length
      ? ["Environment variables set (values are never shown here): ", keys.map((k, i) => [i ? ", " : "", h("code", {}, k)])]
      : "No environment variables set."),
  ];
}

function cellView(r) {
  if (r.replicas) {
    const rep = r.replicas;
    const facts = h("dl", { class: "facts" },
      h("dt", {}, "Runtime"), h("dd", {}, r.cell ? r.cell.runtime : "–"),
      h("dt", {}, "Replicas"), h("dd", {}, `${rep.ready} ready of ${rep.desired} wanted`),
      h("dt", {}, "Tier"), h("dd", {}, rep.tier || "–"));
    return [facts, table(["Replica", "State", "Started", "Restarts", "Node"], rep.cells.map((c) => [
      h("code", {}, c.id.slice(0, 12)), badge(c.state), c.started_at ? timeAgo(c.started_at) : "–", String(c.restarts), c.node || "–",
    ]), { caption: "Replicas", empty: "No replica runs." })];
  }
  if (!r.cell) return h("p", { class: "muted" }, "No cell runs for it.");
  const c = r.cell;
  return h("dl", { class: "facts" },
    h("dt", {}, "Runtime"), h("dd", {}, c.runtime),
    h("dt", {}, "Cell"), h("dd", {}, h("code", {}, c.id || "–")),
    h("dt", {}, "Address"), h("dd", {}, h("code", {}, c.url || "–")),
    h("dt", {}, "Started"), h("dd", {}, c.started_at ? timeAgo(c.started_at) : "–"),
    h("dt", {}, "Restarts"), h("dd", {}, String(c.restarts)),
    h("dt", {}, "Last health"), h("dd", {}, c.last_health_at ? timeAgo(c.last_health_at) : "–"));
}

export default async function deployment(main, [id]) {
  const enc = encodeURIComponent(id);
  const fresh = new URLSearchParams(location.search).get("new") === "1";
  const crumbs = h("nav", { class: "crumbs", "aria-label": "Breadcrumb" });
  const title = h("h1", {}, "Deployment");
  const actions = h("div", { class: "head-actions" });
  const state = h("section", { class: "panel state", "aria-live": "polite", "aria-labelledby": "state-title" });
  const timeline = h("ol", { class: "timeline" });
  const logBox = h("pre", { class: "logs", tabindex: "0", "aria-label": "Cell output" });
  const follow = h("input", { type: "checkbox", id: "follow-logs", checked: true });
  const files = h("div", {});
  const meta = h("div", {});
  const cell = h("div", {});
  fill(main,
    crumbs,
    h("div", { class: "page-head" }, title, actions),
    state,
    h("div", { class: "grid-2 wide" },
      h("section", { class: "panel", "aria-labelledby": "events-title" },
        h("h2", { id: "events-title" }, "Events"), timeline),
      h("section", { class: "panel", "aria-labelledby": "logs-title" },
        h("div", { class: "panel-head" },
          h("h2", { id: "logs-title" }, "Logs"),
          h("label", { class: "check" }, follow, " Follow")),
        logBox)),
    h("section", { class: "panel", "aria-labelledby": "cell-title" }, h("h2", { id: "cell-title" }, "Cell"), cell),
    h("section", { class: "panel", "aria-labelledby": "files-title" }, h("h2", { id: "files-title" }, "Files"), files),
    h("section", { class: "panel", "aria-labelledby": "meta-title" }, h("h2", { id: "meta-title" }, "Metadata"), meta));

  let record = null;
  let logText = "";

  async function loadLogs() {
    try {
      const text = await call(`/api/v1/deployments/${enc}/logs?tail=500`, { as: "text" });
      if (text === logText) return;
      logText = text;
      const atEnd = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4;
      logBox.textContent = text || "(no output yet)";
      if (follow.checked && atEnd) logBox.scrollTop = logBox.scrollHeight;
    } catch (err) {
      logBox.textContent = `The logs could not be read: ${err.message}`;
    }
  }

  function drawState() {
    const r = record;
    const lines = r.status === "failed" ? logText.trimEnd().split("\n").slice(-20).join("\n") : "";
    fill(state, 
      h("h2", { id: "state-title", class: "visually-hidden" }, "Status"),
      h("div", { class: "state-line" }, badge(r.status), h("p", { class: "state-words" }, statusWords(r))),
      r.status_reason ? h("div", { class: r.status === "failed" ? "reason-box failed" : "reason-box" },
        h("h3", {}, r.status === "failed" ? "Why it failed" : "Reason"),
        h("pre", { class: "reason-text" }, r.status_reason)) : null,
      lines ? h("div", { class: "reason-box" }, h("h3", {}, "Last log lines"), h("pre", { class: "logs small" }, lines)) : null,
      fresh && r.status === "ready" ? notice(["It is ready. ", link(`/ui/models/${encodeURIComponent(r.model)}/try`, "Try it now.")], "ok") : null,
      fresh && !SETTLED.includes(r.status) ? h("p", { class: "hint" }, "Following it live until it is ready or fails.") : null);
  }

  async function load() {
    record = await call(`/api/v1/deployments/${enc}`);
    const r = record;
    const model = encodeURIComponent(r.model);
    fill(crumbs, link("/ui/models", "Models"), " / ", link(`/ui/models/${model}`, r.model), " / ", `v${r.version}`);
    title.textContent = `${r.model} v${r.version}`;
    fill(actions, 
      h("code", { class: "muted id" }, r.deploy_id),
      r.active && r.status === "ready" ? link(`/ui/models/${model}/try`, "Try it", { class: "btn" }) : null,
      deploymentActions(r, { after: (verb) => (verb === "delete" ? history.back() : reload()) }));
    const total = r.files.reduce((n, f) => n + f.size, 0);
    fill(files, 
      h("p", { class: "hint" }, `${r.files.length} files, ${fmtBytes(total)}; entrypoint `, h("code", {}, r.entrypoint)),
      table(["Path", "Size", "sha256"], r.files.map((f) => [
        h("code", {}, f.path), fmtBytes(f.size), h("code", { class: "hash", title: f.sha256 }, f.sha256),
      ]), { caption: "Files" }));
    fill(meta, ...metadataView(r.metadata));
    fill(cell, cellView(r));
    if (r.status === "failed") await loadLogs();
    drawState();
  }

  async function loadEvents() {
    const events = await call(`/api/v1/deployments/${enc}/events`);
    fill(timeline, ...events.map(eventItem));
  }

  function eventItem(e) {
    return h("li", { class: `ev ev-${e.kind}` },
      h("time", { datetime: e.at, title: fmtTime(e.at) }, new Date(e.at).toLocaleTimeString(undefined, { hour12: false })),
      h("span", { class: "ev-kind" }, e.kind.replace(/_/g, " ")),
      h("span", { class: "ev-msg", title: e.message }, e.message),
      e.actor ? h("span", { class: "ev-actor" }, `by ${e.actor}`) : null);
  }

  const reload = debounce(() => load().catch(() => {}), 150);
  try {
    await Promise.all([load(), loadEvents(), loadLogs()]);
  } catch (err) {
    state.replaceChildren(notice(err.status === 404 ? `There is no deployment ${id} (it may have been deleted).` : err.message));
    return null;
  }
  const off = live.on((e) => {
    if (e.kind === "gap") {
      loadEvents().catch(() => {});
      reload();
    } else if (e.deploy_id === id) {
      if (e.kind === "deleted") {
        state.replaceChildren(notice("This deployment has been deleted."));
        return;
      }
      timeline.append(eventItem(e));
      reload();
      loadLogs();
    }
  });
  const timer = setInterval(() => {
    if (follow.checked && document.visibilityState === "visible") loadLogs();
  }, LOG_EVERY_MS);
  return () => {
    off();
    clearInterval(timer);
  };
}

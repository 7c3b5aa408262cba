// Asynchronous predictions: filtered by model and status, newest first, each with its
// result or error; delete one. The list refreshes itself while some are still waiting.

import { auth, call } from "../api.js";
import { badge, clear, confirmDialog, field, h, notice, table, timeAgo, toast, fill } from "../dom.js";

const STATUSES = ["", "queued", "running", "succeeded", "failed"];
const WAITING_EVERY_MS = 3000;

function preview(p) {
  if (p.error) return h("span", { class: "reason" }, p.error);
  if (p.status !== "succeeded") return h("span", { class: "muted" }, "–");
  if (p.result === null || p.result === undefined) {
    return p.result_url ? h("code", {}, `${p.result_type || "a result"} at ${p.result_url}`) : "–";
  }
  const text = JSON.stringify(p.result);
  return h("code", { class: "result", title: text }, text.length > 120 ? `${text.slice(0, 120)}…` : text);
}

export default async function predictions(main) {
  const model = h("input", { name: "model", type: "search", autocomplete: "off", placeholder: "all models",
    value: new URLSearchParams(location.search).get("model") || "" });
  const status = h("select", { name: "status" }, STATUSES.map((s) => h("option", { value: s }, s || "any status")));
  const refresh = h("button", { type: "button", class: "btn" }, "Refresh");
  const body = h("div", { "aria-live": "polite" });
  fill(main,
    h("div", { class: "page-head" }, h("h1", {}, "Asynchronous predictions")),
    h("p", { class: "lead" }, "Queued with POST /api/v1/models/{model}/predictions (or “Queue asynchronously” on Try it); results are kept by the server."),
    h("div", { class: "toolbar" }, field("Model", model), field("Status", status), refresh),
    body);
  let timer = null;

  async function load() {
    clearTimeout(timer);
    const params = new URLSearchParams({ limit: "100" });
    if (model.value.trim()) params.set("model", model.value.trim());
    if (status.value) params.set("status", status.value);
    let page;
    try {
      page = await call(`/api/v1/predictions?${params}`);
    } catch (err) {
      body.replaceChildren(notice(err.status === 403 ? "Your token lacks the 'predict' scope, which reading predictions needs." : err.message));
      return;
    }
    const rows = page.items.map((p) => [
      h("code", { title: p.request_id }, p.request_id.slice(0, 12)),
      p.model, badge(p.status), timeAgo(p.created_at),
      p.completed_at ? timeAgo(p.completed_at) : "–",
      p.webhook_status || "–",
      preview(p),
      h("button", { type: "button", class: "btn btn-small btn-danger", "aria-label": `Delete prediction ${p.request_id}`, on: { click: () => remove(p) } }, "Delete"),
    ]);
    fill(body, table(["Request", "Model", "Status", "Queued", "Done", "Webhook", "Result or error", ""], rows, {
      caption: "Asynchronous predictions", empty: "No asynchronous predictions match.",
    }));
    if (page.items.some((p) => p.status === "queued" || p.status === "running")) {
      timer = setTimeout(load, WAITING_EVERY_MS);
    }
  }

  async function remove(p) {
    if (!(await confirmDialog({ title: "Delete this prediction?", body: "Its request and result are removed.", confirm: "Delete", danger: true }))) return;
    try {
      await call(`/api/v1/predictions/${encodeURIComponent(p.request_id)}`, { method: "DELETE" });
      toast("Prediction deleted.");
      load();
    } catch (err) {
      toast(err.message, "error");
    }
  }

  model.addEventListener("change", load);
  status.addEventListener("change", load);
  refresh.addEventListener("click", load);
  if (!auth.can("predict")) body.append(notice("Your token lacks the 'predict' scope.", "info"));
  await load();
  return () => clearTimeout(timer);
}

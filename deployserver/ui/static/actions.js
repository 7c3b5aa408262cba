// What one can ask of a deployment (start, stop, restart, delete, make active), each
// asked through the API exactly as the command line does; all but rollback confirm first.

import { auth, call } from "./api.js";
import { confirmDialog, h, toast } from "./dom.js";

const VERBS = {
  start: { label: "Start", body: "Its cell starts (a failed one gets a fresh try).", confirm: "Start" },
  stop: { label: "Stop", body: "Its cell stops. If it is the active version, its model has no ready cell until another one serves.", confirm: "Stop" },
  restart: { label: "Restart", body: "A fresh cell replaces the running one.", confirm: "Restart" },
  delete: { label: "Delete", body: "Its cell stops and its files and record are removed. This cannot be undone.", confirm: "Delete", danger: true },
};

function allowed(verb, r) {
  const ended = ["stopped", "failed", "received"].includes(r.status);
  if (verb === "start") return r.desired_state === "stopped" || ended;
  if (verb === "stop") return r.desired_state !== "stopped" && r.status !== "stopped";
  if (verb === "restart") return r.desired_state === "running" && !["received", "stopped"].includes(r.status);
  return true;
}

/** The record's action buttons; ``after(verb, answer)`` runs once the server accepted one. */
export function deploymentActions(r, { after = () => {}, withRollback = true } = {}) {
  if (!auth.can("deploy")) return null;
  const what = `version ${r.version} of ${r.model}`;
  const box = h("div", { class: "row-actions" });
  if (withRollback && !r.active) {
    const btn = h("button", { type: "button", class: "btn btn-small btn-primary", "aria-label": `Make ${what} active` }, "Make active");
    btn.addEventListener("click", async () => {
      btn.disabled = true;
      try {
        const answer = await call(`/api/v1/models/${encodeURIComponent(r.model)}/rollback`, {
          method: "POST", json: { deploy_id: r.deploy_id },
        });
        toast(`Rolling back ${r.model} to version ${r.version}: it takes over once ready.`);
        after("rollback", answer);
      } catch (err) {
        toast(`Rollback refused: ${err.message}`, "error");
        btn.disabled = false;
      }
    });
    box.append(btn);
  }
  for (const [verb, v] of Object.entries(VERBS)) {
    if (!allowed(verb, r)) continue;
    const btn = h("button", {
      type: "button",
      class: `btn btn-small${v.danger ? " btn-danger" : ""}`,
      "aria-label": `${v.label} ${what}`,
    }, v.label);
    btn.addEventListener("click", async () => {
      const ok = await confirmDialog({ title: `${v.label} ${what}?`, body: v.body, confirm: v.confirm, danger: v.danger });
      if (!ok) return;
      btn.disabled = true;
      try {
        const path = `/api/v1/deployments/${encodeURIComponent(r.deploy_id)}`;
        const answer = verb === "delete"
          ? await call(path, { method: "DELETE" })
          : await call(`${path}/${verb}`, { method: "POST" });
        toast(verb === "delete" ? `Deleted ${what}.` : `${v.label} asked for ${what}.`);
        after(verb, answer);
      } catch (err) {
        toast(`${v.label} refused: ${err.message}`, "error");
        btn.disabled = false;
      }
    });
    box.append(btn);
  }
  return box;
}

// Scaling of a deployment's replicas, shown only when the server's API has
// PUT /api/v1/deployments/{deploy_id}/scaling (the fields of the metadata's "scaling").

import { call } from "./api.js";
import { field, h, notice, toast } from "./dom.js";

const FIELDS = [
  ["min_replicas", "Fewest replicas", "0 scales to zero while idle"],
  ["max_replicas", "Most replicas", null],
  ["target_concurrency", "Requests in flight per replica", "more than this adds a replica"],
  ["idle_seconds", "Idle seconds before scaling down", null],
];

export function scalingPanel(record, after) {
  const now = (record.metadata && record.metadata.scaling) || {};
  const inputs = {};
  const status = h("div", {});
  const form = h("form", { class: "panel", "aria-labelledby": "scaling-title" },
    h("h2", { id: "scaling-title" }, `Scaling of version ${record.version}`),
    h("div", { class: "grid-2" }, FIELDS.map(([key, label, hint]) => {
      inputs[key] = h("input", { type: "number", min: 0, step: 1, name: key, value: now[key] ?? "" });
      return field(label, inputs[key], hint);
    })),
    status,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-primary" }, "Apply scaling")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {};
    for (const [key] of FIELDS) {
      if (inputs[key].value !== "") body[key] = Number(inputs[key].value);
    }
    try {
      await call(`/api/v1/deployments/${encodeURIComponent(record.deploy_id)}/scaling`, { method: "PUT", json: body });
      status.replaceChildren();
      toast("Scaling changed.");
      after();
    } catch (err) {
      status.replaceChildren(notice(err.message));
    }
  });
  return form;
}

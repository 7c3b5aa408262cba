// One model: its versions (status, reason, when, who uploaded), one-click rollback, the
// lifecycle actions, and scaling once the server's API has it.

import { auth, call, debounce, hasRoute, live } from "../api.js";
import { deploymentActions } from "../actions.js";
import { badge, clear, h, link, notice, table, timeAgo, fill } from "../dom.js";
import { scalingPanel } from "../scaling.js";

export default async function model(main, [name]) {
  const enc = encodeURIComponent(name);
  const summary = h("div", { class: "summary" });
  const versions = h("section", { "aria-labelledby": "versions-title" },
    h("h2", { id: "versions-title" }, "Versions"));
  const versionsBody = h("div", { "aria-live": "polite" });
  const extra = h("div", {});
  versions.append(versionsBody);
  fill(main,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, link("/ui/models", "Models"), " / ", name),
    h("div", { class: "page-head" },
      h("h1", {}, name),
      h("div", { class: "head-actions" },
        link(`/ui/models/${enc}/try`, "Try it", { class: "btn" }),
        auth.can("deploy") ? link(`/ui/new?model=${enc}`, "Upload a new version", { class: "btn btn-primary" }) : null)),
    summary, versions, extra);

  const uploaders = new Map(); // deploy_id -> who uploaded (its "received" event's actor)
  const scaling = await hasRoute("PUT", "/api/v1/deployments/{deploy_id}/scaling");

  async function uploaderOf(id) {
    if (!uploaders.has(id)) {
      uploaders.set(id, call(`/api/v1/deployments/${encodeURIComponent(id)}/events`)
        .then((events) => (events.find((e) => e.kind === "received") || {}).actor || "")
        .catch(() => ""));
    }
    return uploaders.get(id);
  }

  async function load() {
    const [m, list] = await Promise.all([
      call(`/api/v1/models/${enc}`),
      call(`/api/v1/deployments?model=${enc}&limit=100`),
    ]);
    const records = list.items;
    const who = await Promise.all(records.map((r) => uploaderOf(r.deploy_id)));
    const active = records.find((r) => r.deploy_id === m.active_deploy_id);
    fill(summary, h("dl", { class: "facts" },
      h("dt", {}, "Active version"), h("dd", {}, active ? [`v${active.version} `, badge(active.status)] : "none serves now"),
      h("dt", {}, "Versions"), h("dd", {}, String(m.versions.length)),
      h("dt", {}, "Serving at"), h("dd", {}, h("code", {}, `${location.origin}/serve/${name}/predict`)),
      active && active.replicas ? [h("dt", {}, "Replicas"), h("dd", {}, `${active.replicas.ready} ready of ${active.replicas.desired}`)] : null));
    const rows = records.map((r, i) => [
      link(`/ui/deployments/${r.deploy_id}`, `v${r.version}`, { class: "strong", "aria-label": `version ${r.version}` }),
      h("span", {}, badge(r.status), r.active ? h("span", { class: "tag" }, "active") : null),
      r.status_reason ? h("span", { class: "reason" }, r.status_reason) : h("span", { class: "muted" }, "–"),
      timeAgo(r.created_at),
      who[i] || h("span", { class: "muted" }, "–"),
      deploymentActions(r, { after: () => reload() }) || "",
    ]);
    fill(versionsBody, table(["Version", "Status", "Reason", "Uploaded", "By", "Actions"], rows, {
      caption: `Versions of ${name}`, empty: "No versions left.",
    }));
    clear(extra);
    if (scaling && active && auth.can("deploy")) extra.append(scalingPanel(active, () => reload()));
  }

  const reload = debounce(() => load().catch(() => {}), 250);
  try {
    await load();
  } catch (err) {
    versionsBody.replaceChildren(notice(err.status === 404 ? `There is no model “${name}”.` : err.message));
    return null;
  }
  return live.on((e) => {
    if (e.kind === "gap" || e.model === name) reload();
  });
}

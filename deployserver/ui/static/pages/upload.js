// New deployment: a folder, files or an archive (dropped or picked), the metadata form
// checked against the server's own schema before sending, the upload with its progress,
// then the deployment page, which follows it live to ready or failed.

import { auth, upload } from "../api.js";
import { select } from "../ignore.js";
import { validate } from "../validate.js";
import { clear, field, fmtBytes, fmtSeconds, h, notice, setFieldError, table, uniqueId, fill } from "../dom.js";

const ARCHIVE = /\.(zip|tar|tgz|tar\.gz)$/i;
const FORMS = {
  model: "must be lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63",
  memory: "must look like 512m, 2g or 1Gi",
  entrypoint: "must look like path/to/file.py:ClassName, a path inside the package",
  env: "must be a variable name: letters, digits and '_', not starting with a digit",
  requirements: "must be one requirement on one line",
};
/** The schema's own words for a pattern are a regular expression: say it in words. */
const worded = (key, message) => (message.startsWith("must match") && FORMS[key] ? FORMS[key] : message);
const FORM_KEYS = ["model", "description", "entrypoint", "requirements", "parameters", "env", "resources", "public"];

async function loadSchema() {
  const resp = await fetch(new URL("../metadata.schema.json", import.meta.url));
  return resp.json();
}

/** Every file under a dropped folder entry, with its path relative to ``prefix``. */
async function walkEntry(entry, prefix, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    out.push({ path: prefix + entry.name, file });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) break;
      for (const child of batch) await walkEntry(child, `${prefix}${entry.name}/`, out);
    }
  }
}

export default async function newDeployment(main, _params, { navigate }) {
  const schemaPromise = loadSchema();
  const presetModel = new URLSearchParams(location.search).get("model") || "";
  let all = []; // [{path, file}] as picked
  let extras = {}; // metadata.json fields the form has no input for
  let ignoreText = "";
  let fromFile = null;

  // --- files -------------------------------------------------------------------------
  const pickFiles = h("input", { type: "file", multiple: true, id: "pick-files", class: "visually-hidden" });
  const pickFolder = h("input", { type: "file", id: "pick-folder", class: "visually-hidden", webkitdirectory: true });
  const pickArchive = h("input", { type: "file", id: "pick-archive", class: "visually-hidden", accept: ".zip,.tar,.tgz,.tar.gz,application/zip,application/gzip,application/x-tar" });
  const drop = h("div", { class: "dropzone", "data-state": "idle" },
    h("p", { class: "drop-title" }, "Drop a folder, files or an archive here"),
    h("p", { class: "hint" }, "A folder's metadata.json fills the form below; .deployignore is applied as the command line applies it."),
    h("div", { class: "pickers" },
      pickFolder, h("label", { for: "pick-folder", class: "btn" }, "Choose a folder…"),
      pickFiles, h("label", { for: "pick-files", class: "btn" }, "Choose files…"),
      pickArchive, h("label", { for: "pick-archive", class: "btn" }, "Choose an archive…")));
  const fileList = h("div", { class: "file-list", "aria-live": "polite" });

  // --- metadata form -----------------------------------------------------------------
  const inputs = {
    model: h("input", { name: "model", required: true, autocomplete: "off", spellcheck: "false", value: presetModel, placeholder: "sentiment" }),
    description: h("textarea", { name: "description", rows: 2 }),
    entrypoint: h("input", { name: "entrypoint", autocomplete: "off", spellcheck: "false", placeholder: "score.py:Model" }),
    requirements: h("textarea", { name: "requirements", rows: 3, spellcheck: "false", placeholder: "scikit-learn==1.5.2" }),
    parameters: h("textarea", { name: "parameters", rows: 3, spellcheck: "false", placeholder: '{"threshold": 0.5}' }),
    cpus: h("input", { name: "cpus", type: "number", min: "0.01", step: "any", inputmode: "decimal" }),
    memory: h("input", { name: "memory", autocomplete: "off", placeholder: "512m" }),
    public: h("input", { name: "public", type: "checkbox" }),
    start: h("input", { name: "start", type: "checkbox", checked: true }),
  };
  const fields = {
    model: field("Model name", inputs.model, "Lower-case letters, digits, '.', '_' and '-'; a new upload of a name becomes its next version."),
    description: field("Description", inputs.description),
    entrypoint: field("Entrypoint", inputs.entrypoint, "path/to/file.py:ClassName; found by itself when empty (score.py, MLmodel, Model.py, ...)."),
    requirements: field("Requirements", inputs.requirements, "One pip requirement a line (names and versions only)."),
    parameters: field("Parameters", inputs.parameters, "A JSON object passed to the scoring class."),
    cpus: field("CPUs", inputs.cpus),
    memory: field("Memory", inputs.memory, "Like 512m or 2g."),
  };
  const envRows = h("div", { class: "env-rows" });
  const envError = h("p", { class: "field-error", hidden: true, id: uniqueId("env-err") });
  function addEnvRow(key = "", value = "") {
    const k = h("input", { "aria-label": "Variable name", placeholder: "NAME", value: key, spellcheck: "false", autocomplete: "off", class: "env-key" });
    const v = h("input", { "aria-label": "Variable value (hidden)", type: "password", value, autocomplete: "new-password", class: "env-value" });
    const row = h("div", { class: "env-row" }, k, v);
    row.append(h("button", { type: "button", class: "btn btn-small", "aria-label": "Remove this variable", on: { click: () => row.remove() } }, "Remove"));
    envRows.append(row);
    return k;
  }
  const envSet = h("fieldset", { class: "field" },
    h("legend", {}, "Environment variables"),
    h("p", { class: "hint" }, "Passed to the cell. Their values are never shown again, here or anywhere in the UI."),
    envRows, envError,
    h("button", { type: "button", class: "btn btn-small", on: { click: () => addEnvRow().focus() } }, "Add a variable"));
  const extrasNote = h("p", { class: "hint" });
  const formErrors = h("div", { class: "status-area" });
  const sendBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Upload and deploy");
  const form = h("form", { class: "panel upload-form", novalidate: true, "aria-labelledby": "meta-title" },
    h("h2", { id: "meta-title" }, "Metadata"),
    fromFile = h("p", { class: "hint", hidden: true }),
    fields.model, fields.description, fields.entrypoint,
    h("div", { class: "grid-2" }, fields.requirements, fields.parameters),
    envSet,
    h("fieldset", { class: "field" }, h("legend", {}, "Resources"), h("div", { class: "grid-2" }, fields.cpus, fields.memory)),
    h("div", { class: "checks" },
      h("label", { class: "check" }, inputs.public, " Public: anyone may send predictions, without a token"),
      h("label", { class: "check" }, inputs.start, " Start it now")),
    extrasNote, formErrors,
    h("div", { class: "actions" }, sendBtn));

  // --- progress ----------------------------------------------------------------------
  const bar = h("progress", { max: 1, value: 0, "aria-label": "Upload progress" });
  const barText = h("p", { class: "progress-text", "aria-live": "polite" });
  const cancelBtn = h("button", { type: "button", class: "btn" }, "Cancel");
  const progress = h("section", { class: "panel", hidden: true, "aria-labelledby": "up-title" },
    h("h2", { id: "up-title" }, "Uploading"), bar, barText, h("div", { class: "actions" }, cancelBtn));

  fill(main,
    h("div", { class: "page-head" }, h("h1", {}, "New deployment")),
    h("section", { class: "panel", "aria-labelledby": "files-title" }, h("h2", { id: "files-title" }, "Files"), drop, fileList),
    form, progress);

  if (!auth.can("deploy")) {
    formErrors.replaceChildren(notice(`Your token (${auth.me.name}) lacks the 'deploy' scope: the server will refuse an upload.`));
  }

  // --- taking files in -----------------------------------------------------------------
  async function take(picked) {
    all = picked.sort((a, b) => a.path.localeCompare(b.path));
    const meta = all.find((f) => f.path === "metadata.json");
    const ignore = all.find((f) => f.path === ".deployignore");
    ignoreText = ignore ? await ignore.file.text() : "";
    extras = {};
    fromFile.hidden = true;
    if (meta) {
      try {
        const parsed = JSON.parse(await meta.file.text());
        if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
          fillForm(parsed);
          fromFile.textContent = "The form holds what the folder's metadata.json says.";
          fromFile.hidden = false;
        }
      } catch (err) {
        formErrors.replaceChildren(notice(`metadata.json is not valid JSON (${err.message}); fill the form instead.`));
      }
    }
    drawFiles();
  }

  function fillForm(meta) {
    const text = (v) => (v === undefined || v === null ? "" : String(v));
    if (!presetModel || !inputs.model.value) inputs.model.value = text(meta.model);
    inputs.description.value = text(meta.description);
    inputs.entrypoint.value = text(meta.entrypoint);
    inputs.requirements.value = Array.isArray(meta.requirements) ? meta.requirements.join("\n") : "";
    inputs.parameters.value = meta.parameters && Object.keys(meta.parameters).length ? JSON.stringify(meta.parameters, null, 1) : "";
    const res = meta.resources || {};
    inputs.cpus.value = text(res.cpus);
    inputs.memory.value = text(res.memory);
    inputs.public.checked = meta.public === true;
    clear(envRows);
    for (const [k, v] of Object.entries(meta.env || {})) addEnvRow(k, String(v));
    extras = Object.fromEntries(Object.entries(meta).filter(([k]) => !FORM_KEYS.includes(k)));
    const extraKeys = Object.keys(extras);
    extrasNote.textContent = extraKeys.length ? `Also sent as metadata.json has them: ${extraKeys.join(", ")}.` : "";
  }

  function sending() {
    if (all.length === 1 && ARCHIVE.test(all[0].path)) return { kept: all, left: [], archive: true };
    return { ...select(all, extras, ignoreText), archive: false };
  }

  function drawFiles() {
    const { kept, left, archive } = sending();
    clear(fileList);
    if (!all.length) {
      fileList.append(h("p", { class: "muted" }, "No files chosen yet."));
      return;
    }
    const total = kept.reduce((n, f) => n + f.file.size, 0);
    fileList.append(
      h("p", { class: "hint" }, archive
        ? `One archive, ${fmtBytes(total)}: the server unpacks it.`
        : `${kept.length} ${kept.length === 1 ? "file" : "files"} to send, ${fmtBytes(total)}${left.length ? `; ${left.length} left out (${left.map((f) => f.path).slice(0, 5).join(", ")}${left.length > 5 ? ", ..." : ""})` : ""}.`),
      table(["Path", "Size", ""], kept.map((f) => [
        h("code", {}, f.path), fmtBytes(f.file.size),
        h("button", { type: "button", class: "btn btn-small", "aria-label": `Leave out ${f.path}`, on: { click: () => { all = all.filter((x) => x !== f); drawFiles(); } } }, "Leave out"),
      ]), { caption: "Files to send" }));
  }

  pickFiles.addEventListener("change", () => take([...pickFiles.files].map((file) => ({ path: file.name, file }))));
  pickArchive.addEventListener("change", () => take([...pickArchive.files].map((file) => ({ path: file.name, file }))));
  pickFolder.addEventListener("change", () => take([...pickFolder.files].map((file) => ({
    path: file.webkitRelativePath.split("/").slice(1).join("/") || file.name, file,
  }))));
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.dataset.state = "over";
  });
  drop.addEventListener("dragleave", () => { drop.dataset.state = "idle"; });
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.dataset.state = "idle";
    const entries = [...e.dataTransfer.items].map((item) => item.webkitGetAsEntry()).filter(Boolean);
    const out = [];
    if (entries.length === 1 && entries[0].isDirectory) {
      // one folder: its files, relative to it
      const dir = entries[0];
      const reader = dir.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walkEntry(child, "", out);
      }
    } else {
      for (const entry of entries) await walkEntry(entry, "", out);
    }
    take(out);
  });
  drawFiles();

  // --- checking the form -------------------------------------------------------------
  function metadata() {
    const problems = {};
    const meta = { ...extras };
    const v = (k) => inputs[k].value.trim();
    meta.model = v("model");
    if (v("description")) meta.description = inputs.description.value;
    if (v("entrypoint")) meta.entrypoint = v("entrypoint");
    const reqs = inputs.requirements.value.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    if (reqs.length) meta.requirements = reqs;
    if (v("parameters")) {
      try {
        meta.parameters = JSON.parse(inputs.parameters.value);
      } catch (err) {
        problems.parameters = `is not JSON: ${err.message}`;
      }
    }
    const env = {};
    for (const row of envRows.querySelectorAll(".env-row")) {
      const key = row.querySelector(".env-key").value.trim();
      if (key) env[key] = row.querySelector(".env-value").value;
    }
    if (Object.keys(env).length) meta.env = env;
    const resources = {};
    if (v("cpus")) resources.cpus = Number(v("cpus"));
    if (v("memory")) resources.memory = v("memory");
    if (Object.keys(resources).length) meta.resources = resources;
    if (inputs.public.checked) meta.public = true;
    return { meta, problems };
  }

  const FIELD_OF = { model: "model", description: "description", entrypoint: "entrypoint", requirements: "requirements", parameters: "parameters" };

  async function check() {
    const schema = await schemaPromise;
    const { meta, problems } = metadata();
    const general = [];
    let envProblem = null;
    for (const e of validate(schema, meta)) {
      const [top, sub] = e.path;
      const where = e.path.join(".");
      if (top === "resources" && (sub === "cpus" || sub === "memory")) problems[sub] = problems[sub] || worded(sub, e.message);
      else if (top === "env") envProblem = envProblem || `${JSON.stringify(String(sub))} ${worded("env", e.message.replace(/^name "[^"]*" /, ""))}`;
      else if (FIELD_OF[top] && !problems[top]) problems[top] = worded(top, e.message);
      else general.push(`${where || "metadata"}: ${e.message}`);
    }
    for (const [key, wrap] of Object.entries(fields)) {
      setFieldError(wrap, problems[key] ? `${wrap.querySelector("label").textContent} ${problems[key]}` : null);
    }
    envError.textContent = envProblem || "";
    envError.hidden = !envProblem;
    if (!all.length) general.push("Choose the files to deploy first.");
    else if (!sending().kept.length) general.push("Every file is left out: nothing would be sent.");
    formErrors.replaceChildren(...general.map((g) => notice(g)));
    const first = Object.keys(fields).find((k) => problems[k]);
    return { meta, ok: !first && !envProblem && !general.length, first };
  }

  for (const key of Object.keys(fields)) inputs[key].addEventListener("blur", () => { if (form.dataset.tried) check(); });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    form.dataset.tried = "1";
    const { meta, ok, first } = await check();
    if (!ok) {
      if (first) inputs[first].focus();
      else formErrors.querySelector(".notice")?.focus?.();
      return;
    }
    const { kept } = sending();
    const body = new FormData();
    body.append("metadata", new Blob([JSON.stringify(meta)], { type: "application/json" }), "metadata.json");
    for (const f of kept) body.append("files", f.file, f.path);
    sendBtn.disabled = true;
    progress.hidden = false;
    const started = performance.now();
    const samples = [];
    const job = upload(body, {
      start: inputs.start.checked,
      onProgress(sent, total) {
        const now = performance.now();
        samples.push([now, sent]);
        while (samples.length > 2 && now - samples[0][0] > 3000) samples.shift();
        const [t0, s0] = samples[0];
        const speed = now > t0 ? ((sent - s0) * 1000) / (now - t0) : 0;
        bar.max = total;
        bar.value = sent;
        const left = speed > 0 ? fmtSeconds((total - sent) / speed) : "";
        barText.textContent = `${fmtBytes(sent)} of ${fmtBytes(total)}` +
          (speed > 0 ? ` · ${fmtBytes(speed)}/s` : "") +
          (sent < total && left ? ` · ${left} left` : "");
      },
    });
    cancelBtn.onclick = () => job.abort();
    try {
      const record = await job.promise;
      const seconds = (performance.now() - started) / 1000;
      barText.textContent = `${barText.textContent || "Sent"} · done in ${fmtSeconds(seconds)}`;
      navigate(`/ui/deployments/${encodeURIComponent(record.deploy_id)}?new=1`);
    } catch (err) {
      progress.hidden = err.code !== "aborted" ? false : true;
      formErrors.replaceChildren(notice(err.code === "aborted" ? "The upload was cancelled; nothing was kept." : `The server refused the upload (${err.code}): ${err.message}`));
      sendBtn.disabled = false;
    }
  });
  return null;
}

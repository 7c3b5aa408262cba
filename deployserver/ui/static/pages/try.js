// Try it: a request (JSON or a file) to /serve/{model}/..., its answer, status and
// latency, and the same request as a curl command to copy.

import { auth, call } from "../api.js";
import { clear, copyButton, field, h, link, notice, fill } from "../dom.js";

const EXAMPLES = { int: 1, double: 0.5, string: "some text", bool: true, dict: {} };

function example(spec) {
  if (!Array.isArray(spec) || !spec.length) return { inputs: [[1, 2, 3]] };
  const out = {};
  for (const f of spec) {
    const base = f.data_type.replace(/^array_/, "");
    const one = EXAMPLES[base] ?? null;
    out[f.name] = f.data_type.startsWith("array_") ? [one] : one;
  }
  return out;
}

const quote = (s) => `'${String(s).replace(/'/g, "'\\''")}'`;

export default async function tryIt(main, [model]) {
  const models = await call("/api/v1/models").catch(() => ({ items: [] }));
  const names = models.items.map((m) => m.name);
  const chosen = model || new URLSearchParams(location.search).get("model") || names[0] || "";
  const modelSel = h("select", { name: "model" }, names.map((n) => h("option", { value: n, selected: n === chosen }, n)));
  if (chosen && !names.includes(chosen)) modelSel.append(h("option", { value: chosen, selected: true }, chosen));
  const method = h("select", { name: "method" }, ["POST", "GET"].map((m) => h("option", { value: m }, m)));
  const path = h("input", { name: "path", value: "predict", spellcheck: "false", autocomplete: "off" });
  const asJson = h("input", { type: "radio", name: "kind", value: "json", checked: true, id: "kind-json" });
  const asFile = h("input", { type: "radio", name: "kind", value: "file", id: "kind-file" });
  const body = h("textarea", { name: "body", rows: 8, spellcheck: "false", class: "mono" });
  const file = h("input", { type: "file", name: "file" });
  const bodyField = field("Request body (JSON)", body);
  const fileField = field("File to send (as the multipart part “file”)", file);
  fileField.hidden = true;
  const send = h("button", { type: "submit", class: "btn btn-primary" }, "Send");
  const queue = h("button", { type: "button", class: "btn" }, "Queue asynchronously");
  const answer = h("section", { class: "panel", "aria-live": "polite", "aria-labelledby": "answer-title" },
    h("h2", { id: "answer-title" }, "Answer"), h("p", { class: "muted" }, "Nothing sent yet."));
  const curlText = h("pre", { class: "code curl" });
  const curl = h("section", { class: "panel", "aria-labelledby": "curl-title" },
    h("div", { class: "panel-head" }, h("h2", { id: "curl-title" }, "As a curl command"), copyButton(() => curlText.textContent, "Copy", curlText)),
    curlText,
    h("p", { class: "hint" }, "It reads the token from $DEPLOYSERVER_TOKEN: your token is never written into it."));
  const form = h("form", { class: "panel try-form", "aria-labelledby": "req-title" },
    h("h2", { id: "req-title" }, "Request"),
    h("div", { class: "grid-3" }, field("Model", modelSel), field("Method", method), field("Path under the model", path)),
    h("fieldset", { class: "field inline" }, h("legend", {}, "Send"),
      h("label", { class: "check" }, asJson, " JSON"), h("label", { class: "check" }, asFile, " a file")),
    bodyField, fileField,
    h("div", { class: "actions" }, auth.can("predict") ? queue : null, send));
  fill(main,
    h("div", { class: "page-head" }, h("h1", {}, "Try it"),
      chosen ? link(`/ui/models/${encodeURIComponent(chosen)}`, "Back to the model", { class: "btn" }) : null),
    names.length || chosen ? null : notice("There is no model to try yet.", "info"),
    h("div", { class: "grid-2 wide" }, form, h("div", {}, answer, curl)));

  async function prefill() {
    const m = modelSel.value;
    if (!m) return;
    try {
      const info = await call(`/api/v1/models/${encodeURIComponent(m)}`);
      if (!info.active_deploy_id) {
        body.value = JSON.stringify(example(null), null, 2);
      } else {
        const record = await call(`/api/v1/deployments/${encodeURIComponent(info.active_deploy_id)}`);
        body.value = JSON.stringify(example(record.metadata && record.metadata.input_spec), null, 2);
      }
    } catch {
      body.value = JSON.stringify(example(null), null, 2);
    }
    drawCurl();
  }

  function url() {
    return `/serve/${encodeURIComponent(modelSel.value)}/${path.value.replace(/^\/+/, "")}`;
  }

  function drawCurl() {
    const parts = ["curl -s"];
    if (method.value !== "GET" || asFile.checked) parts.push(`-X ${method.value}`);
    parts.push('-H "Authorization: Bearer $DEPLOYSERVER_TOKEN"');
    if (method.value !== "GET") {
      if (asFile.checked) {
        parts.push(`-F ${quote(`file=@${file.files[0] ? file.files[0].name : "photo.png"}`)}`);
      } else {
        let compact = body.value;
        try { compact = JSON.stringify(JSON.parse(body.value)); } catch { /* sent as typed */ }
        parts.push("-H 'Content-Type: application/json'", `-d ${quote(compact)}`);
      }
    }
    parts.push(quote(location.origin + url()));
    curlText.textContent = parts.join(" \\\n     ");
  }

  function toggle() {
    fileField.hidden = !asFile.checked;
    bodyField.hidden = asFile.checked;
    drawCurl();
  }

  for (const el of [method, path, body, file]) el.addEventListener("input", drawCurl);
  for (const el of [asJson, asFile]) el.addEventListener("change", toggle);
  modelSel.addEventListener("change", prefill);
  method.addEventListener("change", drawCurl);

  queue.addEventListener("click", async () => {
    let data;
    try {
      data = JSON.parse(body.value);
    } catch (err) {
      fill(answer, h("h2", { id: "answer-title" }, "Answer"), notice(`The body is not JSON: ${err.message}`));
      return;
    }
    try {
      const job = await call(`/api/v1/models/${encodeURIComponent(modelSel.value)}/predictions`, { method: "POST", json: data });
      fill(answer, h("h2", { id: "answer-title" }, "Answer"),
        notice(["Queued as ", h("code", {}, job.request_id), ". ", link(`/ui/predictions?model=${encodeURIComponent(modelSel.value)}`, "See it among the asynchronous predictions.")], "ok"));
    } catch (err) {
      fill(answer, h("h2", { id: "answer-title" }, "Answer"), notice(`Not queued: ${err.message}`));
    }
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const init = { method: method.value, headers: {} };
    if (auth.token) init.headers.Authorization = `Bearer ${auth.token}`;
    if (method.value !== "GET") {
      if (asFile.checked) {
        if (!file.files[0]) {
          fill(answer, h("h2", { id: "answer-title" }, "Answer"), notice("Choose a file to send."));
          return;
        }
        const form = new FormData();
        form.append("file", file.files[0], file.files[0].name);
        init.body = form;
      } else {
        try {
          JSON.parse(body.value);
        } catch (err) {
          fill(answer, h("h2", { id: "answer-title" }, "Answer"), notice(`The body is not JSON: ${err.message}`));
          body.focus();
          return;
        }
        init.body = body.value;
        init.headers["Content-Type"] = "application/json";
      }
    }
    send.disabled = true;
    const started = performance.now();
    let resp;
    try {
      resp = await fetch(url(), init);
    } catch (err) {
      fill(answer, h("h2", { id: "answer-title" }, "Answer"), notice(`No answer: ${err.message}`));
      send.disabled = false;
      return;
    }
    const type = resp.headers.get("Content-Type") || "";
    const blob = await resp.blob();
    const ms = performance.now() - started;
    send.disabled = false;
    let shown;
    if (type.startsWith("image/")) {
      shown = h("img", { src: URL.createObjectURL(blob), alt: "The image the model answered", class: "answer-img" });
    } else {
      let text = await blob.text();
      if (type.includes("json")) {
        try { text = JSON.stringify(JSON.parse(text), null, 2); } catch { /* shown as sent */ }
      }
      shown = h("pre", { class: "code answer-body" }, text || "(empty)");
    }
    fill(answer, 
      h("h2", { id: "answer-title" }, "Answer"),
      h("div", { class: "answer-meta" },
        h("span", { class: `badge badge-${resp.ok ? "ready" : "failed"} answer-status` }, `${resp.status} ${resp.statusText}`.trim()),
        h("span", { class: "answer-latency" }, `${ms.toFixed(0)} ms`),
        h("span", { class: "muted" }, type || "no content type")),
      shown);
  });

  await prefill();
  toggle();
  return null;
}

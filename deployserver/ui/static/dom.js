// Building the page: nodes only (never markup from strings), words for people, dialogs.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "on") {
      for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
    } else if (key === "text") {
      el.textContent = value;
    } else if (key === "value" || key === "checked" || key === "disabled" || key === "max") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace ``el``'s children (null and false children are skipped, as in ``h``). */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/** A link inside the UI: the router takes it without reloading the page. */
export function link(href, text, attrs = {}) {
  return h("a", { href, "data-nav": "", ...attrs }, text);
}

let uid = 0;
export function uniqueId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

// words -------------------------------------------------------------------------------

export function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function fmtSeconds(s) {
  if (!Number.isFinite(s)) return "";
  if (s < 1) return "under a second";
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function fmtAgo(iso) {
  if (!iso) return "";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 5) return "just now";
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** A <time> that says "3 min ago" and holds the exact moment in its title. */
export function timeAgo(iso) {
  return h("time", { datetime: iso, title: fmtTime(iso) }, fmtAgo(iso));
}

const STATUS_WORDS = {
  received: "Received: waiting for the server to start it.",
  building: "Building its environment from its requirements.",
  starting: "Starting: its cell is loading the scoring script.",
  ready: "Ready: it answers predictions.",
  failed: "Failed.",
  stopping: "Stopping its cell.",
  stopped: "Stopped: no cell runs.",
};

export function statusWords(record) {
  let words = STATUS_WORDS[record.status] || record.status;
  if (record.status === "ready") {
    words = record.active
      ? "Ready and active: predictions for its model go here."
      : "Ready, not active: another version serves its model.";
  }
  if (record.desired_state === "stopped" && !["stopped", "failed"].includes(record.status)) {
    words += " A stop was asked for.";
  }
  return words;
}

export function badge(status) {
  return h("span", { class: `badge badge-${status || "none"}` }, status || "none");
}

// messages ----------------------------------------------------------------------------

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast toast-${kind}` }, message);
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 9000 : 4500);
}

/** A message inside the page: role=alert for errors so that a screen reader says it. */
export function notice(message, kind = "error") {
  return h("p", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" }, message);
}

/**
 * Ask before doing something that cannot be undone; resolves true when confirmed.
 * A modal <dialog>: focus stays inside, Escape cancels.
 */
export function confirmDialog({ title, body, confirm = "Confirm", danger = false }) {
  return new Promise((resolve) => {
    const titleId = uniqueId("dlg");
    const yes = h("button", { type: "submit", class: danger ? "btn btn-danger" : "btn btn-primary", value: "yes" }, confirm);
    const no = h("button", { type: "submit", class: "btn", value: "no" }, "Cancel");
    const form = h("form", { method: "dialog" },
      h("h2", { id: titleId }, title),
      body ? h("p", {}, body) : null,
      h("div", { class: "actions" }, no, yes),
    );
    const dialog = h("dialog", { "aria-labelledby": titleId, class: "dialog" }, form);
    document.body.append(dialog);
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "yes");
      dialog.remove();
    });
    dialog.showModal();
    no.focus();
  });
}

/** A copy button for ``text()``; falls back to selecting ``target`` where the clipboard is closed. */
export function copyButton(text, label = "Copy", target = null) {
  const btn = h("button", { type: "button", class: "btn btn-small" }, label);
  btn.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text());
      btn.textContent = "Copied";
    } catch {
      if (target) {
        const range = document.createRange();
        range.selectNodeContents(target);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
      }
      btn.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => { btn.textContent = label; }, 2000);
  });
  return btn;
}

/** A table that turns into cards on a narrow screen (each cell shows its column name). */
export function table(headers, rows, { caption, empty } = {}) {
  if (!rows.length && empty) return h("p", { class: "empty" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", { class: "table" },
      caption ? h("caption", { class: "visually-hidden" }, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, rows.map((cells) => {
        const tr = h("tr", {});
        cells.forEach((cell, i) => {
          tr.append(h("td", { "data-label": headers[i] }, cell));
        });
        return tr;
      })),
    ));
}

export function field(labelText, input, hint, error) {
  const id = input.id || uniqueId("f");
  input.id = id;
  const hintEl = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  const errEl = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  const described = [hintEl ? hintEl.id : null, errEl.id].filter(Boolean).join(" ");
  input.setAttribute("aria-describedby", described);
  const wrap = h("div", { class: "field" }, h("label", { for: id }, labelText), input, hintEl, errEl);
  if (error) setFieldError(wrap, error);
  return wrap;
}

export function setFieldError(wrap, message) {
  const input = wrap.querySelector("input, textarea, select");
  const err = wrap.querySelector(".field-error");
  if (message) {
    err.textContent = message;
    err.hidden = false;
    input.setAttribute("aria-invalid", "true");
  } else {
    err.textContent = "";
    err.hidden = true;
    input.removeAttribute("aria-invalid");
  }
}

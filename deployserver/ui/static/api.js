// The API, as the command line uses it: the token (kept in this tab's sessionStorage, sent
// as a bearer header, never a cookie), JSON calls, the upload with its progress, and the
// live event stream read with fetch() (EventSource cannot send an Authorization header).

const KEY = "deployserver.token";

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export const auth = {
  token: sessionStorage.getItem(KEY),
  me: null, // {token_id, name, scopes, expires_at} once known
  onSignedOut: () => {},
  set(token) {
    this.token = token;
    this.me = null;
    sessionStorage.setItem(KEY, token);
  },
  clear() {
    this.token = null;
    this.me = null;
    sessionStorage.removeItem(KEY);
  },
  can(scope) {
    const scopes = this.me ? this.me.scopes : [];
    return scopes.includes("admin") || scopes.includes(scope);
  },
};

function headers(extra = {}) {
  return auth.token ? { Authorization: `Bearer ${auth.token}`, ...extra } : { ...extra };
}

async function errorOf(resp) {
  const retry = resp.headers.get("Retry-After");
  let code = `http_${resp.status}`;
  let message = resp.statusText || `HTTP ${resp.status}`;
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code;
      message = body.error.message;
    }
  } catch {
    // not the API's error shape (a cell's own answer): keep the status line
  }
  return new ApiError(resp.status, code, message, retry && /^\d+$/.test(retry) ? Number(retry) : null);
}

/** Call the API; the answer's JSON (or text with ``as: "text"``), else an ApiError. */
export async function call(path, { method = "GET", json, body, as = "json", signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const resp = await fetch(path, init);
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (resp.status === 401 && auth.me) { // was signed in: the token expired or was revoked
      auth.clear();
      auth.onSignedOut(err.message);
    }
    throw err;
  }
  if (resp.status === 204) return null;
  return as === "text" ? resp.text() : resp.json();
}

export async function login(username, password) {
  const form = new URLSearchParams({ username, password });
  const resp = await fetch("/api/v1/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: form,
  });
  if (!resp.ok) throw await errorOf(resp);
  return (await resp.json()).access_token;
}

export async function whoami() {
  auth.me = await call("/api/v1/auth/me");
  return auth.me;
}

/**
 * Upload a deployment (XMLHttpRequest: fetch() reports no upload progress).
 * ``onProgress(sent, total)``; resolves with the record, rejects with an ApiError.
 * Returns {promise, abort}.
 */
export function upload(form, { start = true, onProgress }) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", `/api/v1/deployments?start=${start ? "true" : "false"}`);
    xhr.setRequestHeader("Authorization", `Bearer ${auth.token}`);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded, e.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status === 202) {
        resolve(xhr.response);
        return;
      }
      const error = xhr.response && xhr.response.error;
      reject(new ApiError(xhr.status, error ? error.code : `http_${xhr.status}`,
        error ? error.message : `the server answered ${xhr.status}`));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "the upload could not reach the server")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "the upload was cancelled")));
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}

// live events -------------------------------------------------------------------------

/** Split server-sent events out of text chunks; calls ``emit({event, data, id})``. */
export function sseParser(emit) {
  let buffer = "";
  let event = "";
  let data = [];
  let id = null;
  return (chunk) => {
    buffer += chunk;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (data.length) emit({ event: event || "message", data: data.join("\n"), id });
        event = "";
        data = [];
      } else if (!line.startsWith(":")) {
        const at = line.indexOf(":");
        const name = at < 0 ? line : line.slice(0, at);
        const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
        if (name === "data") data.push(value);
        else if (name === "event") event = value;
        else if (name === "id") id = value;
      }
    }
  };
}

/**
 * One stream for the whole tab: pages add listeners for deployment events; it reconnects
 * (with Last-Event-ID, so nothing is missed) after a drop, and says how it is.
 */
export const live = {
  state: "off", // off | connecting | live | retrying
  listeners: new Set(),
  stateListeners: new Set(),
  lastId: null,
  controller: null,
  retryDelay: 1000,
  timer: null,

  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  },
  onState(fn) {
    this.stateListeners.add(fn);
    fn(this.state);
    return () => this.stateListeners.delete(fn);
  },
  setState(state) {
    this.state = state;
    for (const fn of this.stateListeners) fn(state);
  },
  start() {
    if (this.controller || !auth.token) return;
    this.connect();
  },
  stop() {
    clearTimeout(this.timer);
    if (this.controller) this.controller.abort();
    this.controller = null;
    this.lastId = null;
    this.setState("off");
  },
  async connect() {
    const controller = new AbortController();
    this.controller = controller;
    this.setState(this.state === "off" ? "connecting" : "retrying");
    const extra = this.lastId ? { "Last-Event-ID": this.lastId } : {};
    try {
      const resp = await fetch("/api/v1/events/stream", {
        headers: headers({ Accept: "text/event-stream", ...extra }),
        signal: controller.signal,
        cache: "no-store",
      });
      if (resp.status === 401 || resp.status === 403) {
        this.controller = null;
        this.setState("off");
        return;
      }
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let ended = null;
      const feed = sseParser((msg) => {
        if (msg.event === "message") {
          if (msg.id) this.lastId = msg.id;
          const data = JSON.parse(msg.data);
          for (const fn of this.listeners) fn(data);
        } else if (msg.event === "end") {
          ended = JSON.parse(msg.data).message;
        } else if (msg.event === "gap") {
          for (const fn of this.listeners) fn({ kind: "gap" });
        }
      });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        if (this.state !== "live") {
          this.setState("live");
          this.retryDelay = 1000;
        }
        feed(value);
      }
      if (ended && /token/.test(ended)) {
        this.controller = null;
        this.setState("off");
        return;
      }
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    if (this.controller !== controller) return;
    this.controller = null;
    this.setState("retrying");
    this.timer = setTimeout(() => this.connect(), this.retryDelay);
    this.retryDelay = Math.min(this.retryDelay * 2, 15000);
  },
};

/** Call ``fn`` at most once per ``ms`` for a burst of calls (the last one wins). */
export function debounce(fn, ms = 250) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

let openapi = null;
/** Whether the server's API has ``method path`` (features appear when the server has them). */
export async function hasRoute(method, path) {
  if (!openapi) {
    openapi = fetch("/openapi.json").then((r) => (r.ok ? r.json() : { paths: {} })).catch(() => ({ paths: {} }));
  }
  const doc = await openapi;
  return Boolean(doc.paths && doc.paths[path] && doc.paths[path][method.toLowerCase()]);
}

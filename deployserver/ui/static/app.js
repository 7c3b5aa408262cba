// The UI's entry: the header, the router (real paths under /ui, the History API), sign-in
// state. Each page is a module whose default export renders into <main> and may return a
// function that cleans up (listeners, timers) when the person leaves it.

import { auth, call, live, whoami } from "./api.js";
import { clear, h, link, toast } from "./dom.js";
import signin from "./pages/signin.js";
import models from "./pages/models.js";
import model from "./pages/model.js";
import deployment from "./pages/deployment.js";
import upload from "./pages/upload.js";
import tryIt from "./pages/try.js";
import predictions from "./pages/predictions.js";
import admin from "./pages/admin.js";

const ROUTES = [
  [/^\/ui\/signin$/, signin, { open: true }],
  [/^\/ui\/models$/, models],
  [/^\/ui\/models\/([^/]+)$/, model],
  [/^\/ui\/models\/([^/]+)\/try$/, tryIt],
  [/^\/ui\/try$/, tryIt],
  [/^\/ui\/deployments\/([^/]+)$/, deployment],
  [/^\/ui\/new$/, upload],
  [/^\/ui\/predictions$/, predictions],
  [/^\/ui\/admin$/, admin],
];

const NAV = [
  ["/ui/models", "Models", null],
  ["/ui/new", "New deployment", "deploy"],
  ["/ui/try", "Try it", null],
  ["/ui/predictions", "Async predictions", "predict"],
  ["/ui/admin", "Tokens & users", "admin"],
];

let cleanup = null;
let unLive = null;

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  render();
}

function header() {
  const top = clear(document.getElementById("top"));
  const brand = h("a", { href: "/ui/models", "data-nav": "", class: "brand" },
    h("img", { src: new URL("./icon.svg", import.meta.url).pathname, alt: "", width: 22, height: 22 }),
    h("span", {}, "deployserver"));
  if (!auth.me) {
    top.append(h("div", { class: "top-inner" }, brand));
    return;
  }
  const here = location.pathname;
  const nav = h("nav", { "aria-label": "Main" },
    h("ul", {}, NAV.filter(([, , scope]) => !scope || auth.can(scope)).map(([href, text]) =>
      h("li", {}, link(href, text, here === href || here.startsWith(`${href}/`) ? { "aria-current": "page" } : {})))));
  const dot = h("span", { class: "live-dot", "aria-hidden": "true" });
  const liveText = h("span", { class: "live-text" });
  const liveEl = h("span", { class: "live", title: "Updates pushed by the server" }, dot, liveText);
  if (unLive) unLive();
  unLive = live.onState((state) => {
    liveEl.dataset.state = state;
    liveText.textContent = { live: "Live", connecting: "Connecting", retrying: "Reconnecting", off: "Not live" }[state];
  });
  const out = h("button", { type: "button", class: "btn btn-small", on: { click: signOut } }, "Sign out");
  const who = h("span", { class: "who", title: `scopes: ${auth.me.scopes.join(", ")}` }, auth.me.name);
  top.append(h("div", { class: "top-inner" }, brand, nav, h("div", { class: "session" }, liveEl, who, out)));
}

function signOut() {
  // a login's token is revoked on the server too (one pasted from an admin is not)
  call("/api/v1/auth/logout", { method: "POST" }).catch(() => {});
  auth.clear();
  live.stop();
  toast("Signed out. The token is forgotten in this tab.");
  navigate("/ui/signin");
}

async function render() {
  if (cleanup) {
    try { cleanup(); } catch { /* the old page is gone anyway */ }
    cleanup = null;
  }
  let path = location.pathname.replace(/\/+$/, "") || "/ui";
  if (path === "/ui") {
    history.replaceState(null, "", "/ui/models");
    path = "/ui/models";
  }
  const main = clear(document.getElementById("main"));
  main.setAttribute("aria-busy", "true");
  if (auth.token && !auth.me) {
    try {
      await whoami();
    } catch (err) {
      auth.clear();
    }
  }
  const found = ROUTES.map(([re, page, opts]) => [path.match(re), page, opts || {}]).find(([m]) => m);
  if (!auth.me && !(found && found[2].open)) {
    const next = location.pathname + location.search;
    history.replaceState(null, "", `/ui/signin?next=${encodeURIComponent(next)}`);
    return render();
  }
  if (auth.me) live.start();
  header();
  if (!found) {
    main.append(h("h1", { tabindex: "-1" }, "Nothing here"), h("p", {}, "This page does not exist. ", link("/ui/models", "Go to the models.")));
  } else {
    const [match, page] = found;
    const params = match.slice(1).map(decodeURIComponent);
    try {
      cleanup = (await page(main, params, { navigate })) || null;
    } catch (err) {
      main.append(h("p", { class: "notice notice-error", role: "alert" }, `This page could not load: ${err.message}`));
    }
  }
  main.setAttribute("aria-busy", "false");
  const heading = main.querySelector("h1");
  if (heading && document.activeElement === document.body) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
  document.title = heading ? `${heading.textContent} · deployserver` : "deployserver";
}

auth.onSignedOut = (message) => {
  live.stop();
  toast(`Signed out: ${message}`, "error");
  navigate(`/ui/signin?next=${encodeURIComponent(location.pathname)}`, { replace: true });
};

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-nav]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  document.activeElement.blur();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", render);
render();

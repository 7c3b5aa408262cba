// Sign in: a user's name and password (the OAuth2 password flow), or a token pasted in.

import { ApiError, auth, login, whoami } from "../api.js";
import { field, h, notice, uniqueId, fill } from "../dom.js";

function nextPath() {
  const next = new URLSearchParams(location.search).get("next") || "/ui/models";
  return next.startsWith("/ui/") && !next.startsWith("/ui/signin") ? next : "/ui/models";
}

export default function signin(main, _params, { navigate }) {
  const status = h("div", { class: "status-area" });
  let lockTimer = null;

  function show(message) {
    status.replaceChildren(message ? notice(message) : "");
  }

  async function accept(token, how) {
    auth.set(token);
    try {
      const me = await whoami();
      if (!me.scopes.includes("read") && !me.scopes.includes("admin")) {
        show(`Signed in as ${me.name}, but this token cannot read deployments (its scopes: ${me.scopes.join(", ")}). Some pages will be empty.`);
      }
      navigate(nextPath(), { replace: true });
    } catch (err) {
      auth.clear();
      show(how === "token" ? `That token is not accepted: ${err.message}` : err.message);
    }
  }

  const user = h("input", { name: "username", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" });
  const pass = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const go = h("button", { type: "submit", class: "btn btn-primary" }, "Sign in");
  const pwForm = h("form", { class: "panel", "aria-labelledby": "pw-title" },
    h("h2", { id: "pw-title" }, "With your password"),
    field("User name", user),
    field("Password", pass),
    h("div", { class: "actions" }, go));
  pwForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    show("");
    go.disabled = true;
    try {
      await accept(await login(user.value.trim(), pass.value), "password");
    } catch (err) {
      if (err instanceof ApiError && (err.status === 429 || err.status === 503) && err.retryAfter) {
        let left = err.retryAfter;
        const words = err.status === 429 ? "Too many sign-in attempts" : "The server is busy signing others in";
        const tick = () => {
          show(`${words}: ${err.message}. You can try again in ${left} s.`);
          if (left <= 0) {
            clearInterval(lockTimer);
            go.disabled = false;
            show("");
          }
          left -= 1;
        };
        tick();
        lockTimer = setInterval(tick, 1000);
        return;
      }
      show(err.status === 400 || err.code === "invalid_grant" ? "The user name or password is wrong." : err.message);
      pass.select();
    }
    if (!lockTimer) go.disabled = false;
  });

  const tokenInput = h("input", { name: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const tokenForm = h("form", { class: "panel", "aria-labelledby": "tok-title" },
    h("h2", { id: "tok-title" }, "With a token"),
    field("API token", tokenInput, "A token from deployserver token create, or the admin token in data/admin-token."),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn" }, "Use this token")));
  tokenForm.addEventListener("submit", (e) => {
    e.preventDefault();
    show("");
    accept(tokenInput.value.trim(), "token");
  });

  const titleId = uniqueId("t");
  fill(main,
    h("section", { class: "signin", "aria-labelledby": titleId },
      h("h1", { id: titleId }, "Sign in to deployserver"),
      h("p", { class: "lead" }, "The token stays in this browser tab only (never in a cookie) and is forgotten when you sign out or close the tab."),
      status,
      h("div", { class: "signin-grid" }, pwForm, tokenForm)));
  user.focus();
  return () => clearInterval(lockTimer);
}

// Tokens and users, for admins: a new token is shown once, here, and never again.

import { call } from "../api.js";
import { clear, confirmDialog, copyButton, field, fmtTime, h, notice, table, timeAgo, toast, fill } from "../dom.js";

const SCOPES = ["read", "deploy", "predict", "admin"];
const LIFETIMES = [["", "never expires"], ["3600", "1 hour"], ["86400", "1 day"], ["2592000", "30 days"], ["7776000", "90 days"]];

function scopeBoxes(name, checked) {
  return h("fieldset", { class: "field inline" }, h("legend", {}, "Scopes"),
    SCOPES.map((s) => h("label", { class: "check" },
      h("input", { type: "checkbox", name, value: s, checked: checked.includes(s) }), ` ${s}`)));
}

function chosen(form, name) {
  return [...form.querySelectorAll(`input[name="${name}"]:checked`)].map((i) => i.value);
}

export default async function admin(main) {
  const tokensBody = h("div", { "aria-live": "polite" });
  const usersBody = h("div", { "aria-live": "polite" });
  const shownOnce = h("div", {});

  const tName = h("input", { name: "token-name", required: true, autocomplete: "off", spellcheck: "false" });
  const tLife = h("select", { name: "expires" }, LIFETIMES.map(([v, t]) => h("option", { value: v }, t)));
  const tStatus = h("div", {});
  const tokenForm = h("form", { class: "panel", "aria-labelledby": "newtok-title" },
    h("h3", { id: "newtok-title" }, "New token"),
    h("div", { class: "grid-2" }, field("Name (shown as who did what)", tName), field("Expires", tLife)),
    scopeBoxes("token-scope", ["read"]), tStatus,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-primary" }, "Create token")));

  const uName = h("input", { name: "user-name", required: true, autocomplete: "off", spellcheck: "false" });
  const uPass = h("input", { name: "user-password", type: "password", required: true, autocomplete: "new-password", minlength: 8 });
  const uStatus = h("div", {});
  const userForm = h("form", { class: "panel", "aria-labelledby": "newuser-title" },
    h("h3", { id: "newuser-title" }, "New user"),
    h("div", { class: "grid-2" }, field("User name", uName), field("Password", uPass, "At least 8 characters.")),
    scopeBoxes("user-scope", ["read", "predict"]), uStatus,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-primary" }, "Create user")));

  fill(main,
    h("div", { class: "page-head" }, h("h1", {}, "Tokens & users")),
    h("section", { "aria-labelledby": "tokens-title" }, h("h2", { id: "tokens-title" }, "Tokens"), shownOnce, tokenForm, tokensBody),
    h("section", { "aria-labelledby": "users-title" }, h("h2", { id: "users-title" }, "Users"), userForm, usersBody));

  async function loadTokens() {
    const { items } = await call("/api/v1/tokens");
    const rows = items.map((t) => [
      h("code", {}, t.id), t.name, t.scopes.join(" "), t.user || "–", timeAgo(t.created_at),
      t.revoked_at ? h("span", { class: "muted" }, `revoked ${fmtTime(t.revoked_at)}`) : t.expires_at ? fmtTime(t.expires_at) : "never",
      t.revoked_at ? "" : h("button", {
        type: "button", class: "btn btn-small btn-danger", "aria-label": `Revoke token ${t.name} (${t.id})`,
        on: { click: () => revoke(t) },
      }, "Revoke"),
    ]);
    fill(tokensBody, table(["Id", "Name", "Scopes", "User", "Created", "Expires", ""], rows, { caption: "Tokens", empty: "No tokens." }));
  }

  async function loadUsers() {
    const { items } = await call("/api/v1/users");
    const rows = items.map((u) => [u.name, u.scopes.join(" "), timeAgo(u.created_at),
      h("button", { type: "button", class: "btn btn-small btn-danger", "aria-label": `Delete user ${u.name}`, on: { click: () => removeUser(u) } }, "Delete")]);
    fill(usersBody, table(["Name", "Scopes", "Created", ""], rows, { caption: "Users", empty: "No users yet." }));
  }

  async function revoke(t) {
    if (!(await confirmDialog({ title: `Revoke the token ${t.name}?`, body: "Every request that carries it is refused from now on.", confirm: "Revoke", danger: true }))) return;
    try {
      await call(`/api/v1/tokens/${encodeURIComponent(t.id)}`, { method: "DELETE" });
      toast(`Token ${t.name} revoked.`);
      await loadTokens();
    } catch (err) {
      toast(err.message, "error");
    }
  }

  async function removeUser(u) {
    if (!(await confirmDialog({ title: `Delete the user ${u.name}?`, body: "Their sign-in tokens end with them.", confirm: "Delete", danger: true }))) return;
    try {
      await call(`/api/v1/users/${encodeURIComponent(u.name)}`, { method: "DELETE" });
      toast(`User ${u.name} deleted.`);
      await Promise.all([loadUsers(), loadTokens()]);
    } catch (err) {
      toast(err.message, "error");
    }
  }

  tokenForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: tName.value.trim(), scopes: chosen(tokenForm, "token-scope") };
    if (tLife.value) body.expires_in = Number(tLife.value);
    try {
      const made = await call("/api/v1/tokens", { method: "POST", json: body });
      const secret = h("code", { class: "secret" }, made.token);
      fill(shownOnce, h("div", { class: "panel once", role: "alert" },
        h("h3", {}, `Token ${made.name} created`),
        h("p", {}, "Copy it now: it is shown this once and the server keeps only its hash."),
        h("div", { class: "secret-row" }, secret, copyButton(() => made.token, "Copy token", secret)),
        h("button", { type: "button", class: "btn btn-small", on: { click: () => clear(shownOnce) } }, "I have copied it")));
      tStatus.replaceChildren();
      tName.value = "";
      await loadTokens();
    } catch (err) {
      tStatus.replaceChildren(notice(err.message));
    }
  });

  userForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await call("/api/v1/users", { method: "POST", json: { name: uName.value.trim(), password: uPass.value, scopes: chosen(userForm, "user-scope") } });
      toast(`User ${uName.value.trim()} created.`);
      uStatus.replaceChildren();
      uName.value = "";
      uPass.value = "";
      await loadUsers();
    } catch (err) {
      uStatus.replaceChildren(notice(err.message));
    }
  });

  try {
    await Promise.all([loadTokens(), loadUsers()]);
  } catch (err) {
    tokensBody.replaceChildren(notice(err.status === 403 ? "Only an admin token may see tokens and users." : err.message));
  }
  return null;
}

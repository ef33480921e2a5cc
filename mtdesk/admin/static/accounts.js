// MT Desk console, accounts: sign-up, e-mail sign-in, password reset and invitations,
// Connect with Meta's outcome, the team and API keys. Built on window.MTDesk (console.js).
//
// One-time links arrive in the URL fragment (#reset=…, #invite=…; a fragment is never sent
// to a server nor in a Referer); it is read once and removed from the address bar.
"use strict";

(function () {
  document.addEventListener("DOMContentLoaded", () => {
    const M = window.MTDesk;
    const { $, el, show, say, when, call, failed, onSubmit, askFirst, state } = M;

    function values(form) {
      const out = {};
      for (const [name, value] of new FormData(form).entries()) out[name] = String(value);
      return out;
    }

    async function signedIn(data) {
      state.csrf = data.csrf_token;
      const me = await call("GET", "/auth/me");
      await M.enterWithSession(me);
    }

    // --- sign-up, sign-in, forgot ---------------------------------------------------------
    onSubmit("signup-form", async (form) => {
      const body = values(form);
      const data = await call("POST", "/auth/signup", { body });
      form.reset();
      say("signup-status", "", "");
      await signedIn(data);
    }, "signup-status");

    onSubmit("login-form", async (form) => {
      const data = await call("POST", "/auth/login", { body: values(form) });
      form.reset();
      say("login-status", "", "");
      await signedIn(data);
    }, "login-status");

    onSubmit("forgot-form", async (form) => {
      const data = await call("POST", "/auth/forgot", { body: values(form) });
      say("forgot-status", "Sent: " + data.sent + ".", "ok");
    }, "forgot-status");

    // --- links from mail, and Meta's dialog sending the person back -------------------
    // (A fragment with no "=" names one of the console's pages: console.js routes it.)
    const hash = new URLSearchParams(location.hash.includes("=") ? location.hash.slice(1) : "");
    if (location.hash.includes("=")) {
      // back from Meta's dialog: the outcome is shown on the channels page
      history.replaceState(null, "", location.pathname + location.search +
                                     (hash.get("connect") ? "#channels" : ""));
    }
    const link = hash.get("reset") ? ["reset", hash.get("reset")]
      : (hash.get("invite") ? ["invite", hash.get("invite")] : null);
    if (link) {
      const [kind, token] = link;
      $("link-title").textContent = kind === "reset" ? "Choose a new password"
        : "Welcome: choose your password";
      show($("link-name-label"), kind === "invite");
      show($("link-box"), true);
      onSubmit("link-form", async (form) => {
        const body = { token, password: values(form).password };
        const name = values(form).name;
        if (kind === "invite" && name) body.name = name;
        const data = await call("POST", kind === "reset" ? "/auth/reset" : "/auth/accept", { body });
        show($("link-box"), false);
        await signedIn(data);
      }, "link-status");
    }
    if (hash.get("connect")) {
      const n = Number(hash.get("connected") || "0");
      const problem = hash.get("problem");
      const text = (n ? `Connected ${n} account(s) with ${hash.get("connect")}: ` +
                        `${hash.get("accounts") || ""}.` : "Nothing was connected.") +
                   (problem ? " " + problem : "");
      for (const id of ["connect-status", "connect-outcome"]) {
        say(id, text, n && !problem ? "ok" : (n ? "" : "error"));
      }
    }

    // --- team -----------------------------------------------------------------------------
    async function loadTeam() {
      if (state.role === "agent") return;
      const { users } = await call("GET", "/team");
      $("team-rows").replaceChildren(...users.map((u) => el("tr", { dataset: { id: u.id } },
        el("td", {}, u.name), el("td", {}, u.email), el("td", {}, u.role),
        el("td", {}, u.status), el("td", {}, el("button", { type: "button", onclick: () =>
          askFirst("team-confirm", `Remove ${u.name} (${u.email}) from the team? Their ` +
                   "sessions end at once.", "Remove", () => call("DELETE", "/team/" +
                   encodeURIComponent(u.id)).then(loadTeam).catch(failed("team-status"))) },
          "Remove…")))));
    }

    onSubmit("invite-form", async (form) => {
      const user = await call("POST", "/team", { body: values(form) });
      form.reset();
      say("team-status", `Invitation mailed to ${user.email}.`, "ok");
      await loadTeam();
    }, "team-status");

    // --- API keys ---------------------------------------------------------------------------
    async function loadKeys() {
      if (state.role === "agent") return;
      const { keys } = await call("GET", "/keys");
      $("key-rows").replaceChildren(...keys.map((k) => el("tr", { dataset: { id: k.id } },
        el("td", {}, k.name), el("td", {}, el("code", {}, k.prefix + "…")),
        el("td", {}, when(k.created_ms)),
        el("td", {}, el("span", { className: "actions" },
          el("button", { type: "button", onclick: () => rotateKey(k).catch(failed("keys-status")) },
            "Rotate"),
          el("button", { type: "button", className: "danger", onclick: () => askFirst(
            "key-confirm", `Revoke the key "${k.name}"? Machines using it get 401 at once.`,
            "Revoke", () => call("DELETE", "/keys/" + encodeURIComponent(k.id))
              .then(loadKeys).catch(failed("keys-status"))) }, "Revoke…"))))));
    }

    function showNewKey(made) {
      $("key-new").replaceChildren(
        `New key "${made.name}" (shown once, copy it now): `, el("code", {}, made.api_key));
    }

    async function rotateKey(k) {
      showNewKey(await call("POST", "/keys/" + encodeURIComponent(k.id) + "/rotate"));
      await loadKeys();
    }

    onSubmit("key-form", async (form) => {
      showNewKey(await call("POST", "/keys", { body: values(form) }));
      form.reset();
      say("keys-status", "", "");
      await loadKeys();
    }, "keys-status");

    // --- billing ----------------------------------------------------------------------------
    async function loadBilling() {
      if (state.role === "agent") return;
      const b = await call("GET", "/billing");
      const facts = [
        ["Plan", b.plan], ["Subscription", b.status],
        [`Messages answered in ${b.month}`,
         b.quota === null ? `${b.usage} (no limit)` : `${b.usage} of ${b.quota}`],
        ["Counter resets", when(b.resets_at_ms)],
      ];
      if (b.current_period_end_s) {
        facts.push([b.cancel_at_period_end ? "Ends" : "Renews", when(b.current_period_end_s * 1000)]);
      }
      $("billing-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
      show($("billing-portal"), b.billing_enabled && b.has_customer);
      show($("checkout-form"), b.billing_enabled && !b.subscription);
      if (!b.billing_enabled) {
        say("billing-status", "Billing is not configured on this server: usage is counted, " +
                              "nothing is charged.", "");
      }
    }

    $("billing-portal").addEventListener("click", () => {
      call("POST", "/billing/portal", { body: {} })
        .then((answer) => { location.assign(answer.url); }).catch(failed("billing-status"));
    });
    onSubmit("checkout-form", async (form) => {
      const answer = await call("POST", "/billing/checkout", { body: values(form) });
      location.assign(answer.url);
    }, "billing-status");
    if (/[?&]billing=success\b/.test(location.search)) {
      say("billing-status", "Thank you: the subscription starts once Stripe confirms it.", "ok");
    }

    M.extraLoads.push(loadTeam, loadKeys, () => loadBilling().catch(failed("billing-status")));
    // A link opened in a tab already showing the console changes only the fragment.
    window.addEventListener("hashchange", () => {
      const next = new URLSearchParams(location.hash.slice(1));
      if (next.has("reset") || next.has("invite") || next.has("connect")) location.reload();
    });
  });
})();

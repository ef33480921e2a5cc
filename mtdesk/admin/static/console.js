// MT Desk admin console: a thin client of the JSON admin API under ./api/v1.
//
// The bearer token lives in sessionStorage only (this tab; never a cookie, never the URL).
// Everything the API returns is shown through textContent and text nodes, never parsed as HTML.
"use strict";

(function () {
  const API = "api/v1";
  const TOKEN_KEY = "mtdesk.admin.token";
  const POLL_MS = 2000;

  const state = { operator: false, tenantId: null, bot: null, convNext: null,
                  thread: null, threadNext: null, poll: null };

  // --- small DOM helpers (text only) ----------------------------------------------------
  function $(id) { return document.getElementById(id); }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (name === "className") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function show(node, visible) { node.hidden = !visible; }

  function say(id, text, kind) {
    const node = $(id);
    node.textContent = text || "";
    node.className = "status" + (kind ? " " + kind : "");
  }

  function when(ms) { return ms ? new Date(ms).toLocaleString() : ""; }

  // --- the API --------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, field, message) {
      super(message);
      this.status = status;
      this.field = field;
    }
    describe() {
      const where = this.field ? this.field + ": " : "";
      return `${where}${this.message} (HTTP ${this.status})`;
    }
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  function scoped(path, params) {
    const query = new URLSearchParams(params || {});
    if (state.operator && state.tenantId) query.set("tenant_id", state.tenantId);
    const qs = query.toString();
    return API + path + (qs ? "?" + qs : "");
  }

  async function call(method, path, { params, body, bearer } = {}) {
    const headers = { "Authorization": "Bearer " + (bearer || token() || "") };
    const init = { method, headers, credentials: "omit", cache: "no-store" };
    if (body !== undefined) {
      const sent = Object.assign({}, body);
      if (state.operator && state.tenantId) sent.tenant_id = state.tenantId;
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(sent);
    }
    let response;
    try {
      response = await fetch(scoped(path, params), init);
    } catch (err) {
      throw new ApiError(0, null, "the server could not be reached");
    }
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) {
      const e = (data && data.error) || {};
      if (response.status === 401 && bearer === undefined) signOut("Signed out: " + (e.message || "401"));
      throw new ApiError(response.status, e.field || null, e.message || response.statusText);
    }
    return data;
  }

  function failed(statusId) {
    return (err) => {
      if (err instanceof ApiError) say(statusId, err.describe(), "error");
      else { say(statusId, String(err), "error"); }
    };
  }

  // --- signing in -----------------------------------------------------------------------
  async function signIn(candidate) {
    // The operator token may list tenants; a tenant key gets 403 there; anything else 401.
    try {
      await call("GET", "/tenants", { bearer: candidate });
      state.operator = true;
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 403) throw err;
      state.operator = false;
    }
    sessionStorage.setItem(TOKEN_KEY, candidate);
    $("token").value = "";
    show($("signin-error"), false);
    show($("signin"), false);
    show($("console"), true);
    show($("signout"), true);
    if (state.operator) {
      await loadTenants();
    } else {
      const tenant = await call("GET", "/tenant");
      state.tenantId = tenant.id;
      $("who").textContent = `${tenant.name} (${tenant.id})`;
      show($("who"), true);
      show($("tenant-picker"), false);
      await loadAll();
    }
  }

  function signOut(why) {
    sessionStorage.removeItem(TOKEN_KEY);
    stopPolling();
    Object.assign(state, { operator: false, tenantId: null, bot: null, thread: null });
    show($("console"), false);
    show($("signout"), false);
    show($("who"), false);
    show($("signin"), true);
    const error = $("signin-error");
    error.textContent = why || "";
    show(error, Boolean(why));
  }

  async function loadTenants() {
    const { tenants } = await call("GET", "/tenants");
    const select = $("tenant-select");
    select.replaceChildren(...tenants.map(
      (t) => el("option", { value: t.id }, `${t.name} (${t.id}, ${t.status})`)));
    $("who").textContent = "operator";
    show($("who"), true);
    show($("tenant-picker"), true);
    state.tenantId = tenants.length ? tenants[0].id : null;
    if (state.tenantId) await loadAll();
    else say("channels-status", "No tenant yet: create one with POST /admin/api/v1/tenants.", "");
  }

  async function loadAll() {
    state.thread = null;
    show($("thread"), false);
    await Promise.all([
      loadChannels().catch(failed("channels-status")),
      loadBot().catch(failed("bot-status")),
      loadSources().catch(failed("knowledge-status")),
      loadConversations(false).catch(failed("conversations-status")),
    ]);
  }

  // --- channels -------------------------------------------------------------------------
  async function loadChannels() {
    const { channels } = await call("GET", "/channels");
    $("channel-rows").replaceChildren(...channels.map((c) => el("tr", { dataset: { id: c.id } },
      el("td", {}, c.channel), el("td", {}, c.account_id),
      el("td", { className: "channel-status" }, c.status),
      el("td", {}, c.disconnected_reason || ""), el("td", {}, when(c.connected_ms)),
      el("td", {}, el("code", {}, c.id)))));
    show($("channels-empty"), channels.length === 0);
  }

  async function connectChannel(form) {
    const data = new FormData(form);
    const body = {
      channel: data.get("channel"),
      account_id: String(data.get("account_id") || "").trim(),
      access_token: String(data.get("access_token") || ""),
    };
    const by = String(data.get("connected_by") || "").trim();
    if (by) body.connected_by = by;
    const record = await call("POST", "/channels", { body });
    form.elements.access_token.value = "";
    say("channels-status", `Connected ${record.channel} ${record.account_id}.`, "ok");
    await loadChannels();
  }

  // --- bot ------------------------------------------------------------------------------
  function fillBot(bot) {
    state.bot = bot;
    const f = $("bot-form").elements;
    for (const name of ["provider", "model", "system_prompt", "grounding", "fallback_message"]) {
      f[name].value = bot[name] == null ? "" : bot[name];
    }
    f.greeting.value = bot.greeting == null ? "" : bot.greeting;
    f.enabled.checked = Boolean(bot.enabled);
  }

  async function loadBot() { fillBot(await call("GET", "/bot")); }

  async function saveBot(form) {
    // PUT replaces the whole config: start from what was loaded (temperature, fallback,
    // min_score… keep their values) and change what the form shows.
    const f = form.elements;
    const body = Object.assign({}, state.bot || {});
    for (const name of ["provider", "model", "system_prompt", "grounding", "fallback_message"]) {
      body[name] = f[name].value;
    }
    body.provider = body.provider.trim();
    body.model = body.model.trim();
    body.greeting = f.greeting.value.trim() ? f.greeting.value : null;
    body.enabled = f.enabled.checked;
    fillBot(await call("PUT", "/bot", { body }));
    say("bot-status", "Saved.", "ok");
  }

  // --- knowledge ------------------------------------------------------------------------
  function stopPolling() {
    if (state.poll) clearTimeout(state.poll);
    state.poll = null;
  }

  function deleteButton(source) {
    const button = el("button", { type: "button", className: "danger" }, "Delete");
    button.addEventListener("click", () => {
      if (button.dataset.armed !== "yes") {
        button.dataset.armed = "yes";
        button.textContent = "Confirm delete";
        return;
      }
      button.disabled = true;
      call("DELETE", "/knowledge/" + encodeURIComponent(source.id))
        .then(() => { say("knowledge-status", `Deleted ${source.name}.`, "ok"); return loadSources(); })
        .catch(failed("knowledge-status"));
    });
    return button;
  }

  async function loadSources() {
    stopPolling();
    const { sources } = await call("GET", "/knowledge");
    $("source-rows").replaceChildren(...sources.map((s) => {
      const progress = s.status === "processing" && s.total ? ` ${s.done}/${s.total}` : "";
      return el("tr", { dataset: { id: s.id } },
        el("td", {}, s.name, s.url && s.url !== s.name ? el("div", { className: "empty" }, s.url) : null),
        el("td", {}, s.kind), el("td", { className: "source-status" }, s.status + progress),
        el("td", {}, String(s.chunks)), el("td", {}, s.error || ""),
        el("td", {}, deleteButton(s)));
    }));
    show($("sources-empty"), sources.length === 0);
    if (sources.some((s) => s.status === "queued" || s.status === "processing")) {
      state.poll = setTimeout(() => loadSources().catch(failed("knowledge-status")), POLL_MS);
    }
  }

  async function addUrl(form) {
    const body = { url: form.elements.url.value.trim(), crawl: form.elements.crawl.checked };
    const source = await call("POST", "/knowledge", { body });
    form.reset();
    say("knowledge-status", `Added ${source.name}: ${source.status}.`, "ok");
    await loadSources();
  }

  async function addQa(form) {
    const body = { qa: [{ q: form.elements.q.value, a: form.elements.a.value }] };
    const source = await call("POST", "/knowledge", { body });
    form.reset();
    say("knowledge-status", `Added ${source.name}: ${source.status}.`, "ok");
    await loadSources();
  }

  // --- conversations --------------------------------------------------------------------
  async function loadConversations(older) {
    const params = { limit: "25" };
    if (older && state.convNext !== null) params.before = String(state.convNext);
    const page = await call("GET", "/conversations", { params });
    const rows = page.conversations.map((c) => el("tr", { dataset: { conversation: c.conversation } },
      el("td", {}, el("code", {}, c.conversation)), el("td", {}, when(c.last_activity_ms)),
      el("td", {}, el("button", { type: "button", onclick: () => openThread(c.conversation)
        .catch(failed("conversations-status")) }, "Open"))));
    if (older) $("conversation-rows").append(...rows);
    else $("conversation-rows").replaceChildren(...rows);
    state.convNext = page.next;
    show($("conversations-more"), page.next !== null);
    show($("conversations-empty"), !older && rows.length === 0);
  }

  function messageItem(m) {
    const who = m.direction === "in" ? "customer" : (m.kind === "agent" ? "agent" : "bot");
    const detail = [who, m.kind, when(m.timestamp_ms), m.status,
                    m.reason, m.provider && m.model ? `${m.provider}:${m.model}` : m.provider]
      .filter(Boolean).join(" · ");
    const attachments = (m.attachments || []).length;
    return el("li", { className: m.direction === "in" ? "in" : "out" },
      el("div", { className: "meta" }, detail),
      el("div", { className: "text" }, m.text == null ? "" : m.text),
      attachments ? el("div", { className: "meta" }, `${attachments} attachment(s)`) : null);
  }

  async function openThread(conversation, more) {
    if (!more) { state.thread = conversation; state.threadNext = null; }
    const params = { limit: "50" };
    if (more && state.threadNext) params.after = state.threadNext;
    const page = await call("GET", "/conversations/" + encodeURIComponent(conversation) + "/messages",
                            { params });
    const items = page.messages.map(messageItem);
    if (more) $("messages").append(...items);
    else $("messages").replaceChildren(...items);
    $("thread-title").textContent = conversation;
    state.threadNext = page.next;
    show($("messages-more"), page.next !== null);
    show($("thread"), true);
  }

  // --- wiring ---------------------------------------------------------------------------
  function onSubmit(id, action, statusId) {
    $(id).addEventListener("submit", (event) => {
      event.preventDefault();
      const form = event.currentTarget;
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      say(statusId, "Working…", "");
      action(form).catch(failed(statusId)).finally(() => { button.disabled = false; });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const candidate = $("token").value.trim();
      if (!candidate) return;
      signIn(candidate).catch((err) => {
        const text = err instanceof ApiError && err.status === 401
          ? "That key or token was not accepted (401): " + err.message
          : (err instanceof ApiError ? err.describe() : String(err));
        signOut(text);
      });
    });
    $("signout").addEventListener("click", () => signOut(""));
    $("tenant-select").addEventListener("change", (event) => {
      state.tenantId = event.target.value;
      loadAll();
    });
    onSubmit("channel-form", connectChannel, "channels-status");
    onSubmit("bot-form", saveBot, "bot-status");
    onSubmit("url-form", addUrl, "knowledge-status");
    onSubmit("qa-form", addQa, "knowledge-status");
    $("sources-refresh").addEventListener("click",
      () => loadSources().catch(failed("knowledge-status")));
    $("conversations-refresh").addEventListener("click",
      () => loadConversations(false).catch(failed("conversations-status")));
    $("conversations-more").addEventListener("click",
      () => loadConversations(true).catch(failed("conversations-status")));
    $("messages-more").addEventListener("click",
      () => openThread(state.thread, true).catch(failed("conversations-status")));
    const saved = token();
    if (saved) signIn(saved).catch((err) => signOut(err instanceof ApiError ? err.describe() : String(err)));
  });
})();

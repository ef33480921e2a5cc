// MT Desk admin console: a thin client of the JSON admin API under ./api/v1.
//
// Two ways in: a person signed in with e-mail and password holds the HttpOnly session
// cookie (changes carry the session's X-CSRF-Token); an API key or the operator token
// lives in sessionStorage only (this tab; never a cookie, never the URL). accounts.js adds
// sign-up, sign-in, password reset, Connect with Meta, team and API keys over window.MTDesk.
// Everything the API returns is shown through textContent and text nodes, never parsed as HTML.
"use strict";

(function () {
  const API = "api/v1";
  const TOKEN_KEY = "mtdesk.admin.token";
  const POLL_MS = 2000;

  const state = { operator: false, tenantId: null, bot: null, convNext: null,
                  thread: null, threadNext: null, poll: null,
                  cookie: false, csrf: null, role: "owner" };

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

  // The response of a call that succeeded (2xx); anything else throws an ApiError.
  // `form` (FormData) is sent as multipart: the browser writes its Content-Type.
  async function request(method, path, { params, body, form, bearer } = {}) {
    const headers = {};
    const viaCookie = !bearer && !token();
    if (viaCookie) {
      if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
    } else {
      headers["Authorization"] = "Bearer " + (bearer || token() || "");
    }
    const init = { method, headers, credentials: viaCookie ? "same-origin" : "omit",
                   cache: "no-store" };
    if (body !== undefined) {
      const sent = Object.assign({}, body);
      if (state.operator && state.tenantId) sent.tenant_id = state.tenantId;
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(sent);
    } else if (form !== undefined) {
      init.body = form;
    }
    let response;
    try {
      response = await fetch(scoped(path, params), init);
    } catch (err) {
      throw new ApiError(0, null, "the server could not be reached");
    }
    if (!response.ok) {
      let data = null;
      try { data = await response.json(); } catch (err) { data = null; }
      const e = (data && data.error) || {};
      if (response.status === 401 && bearer === undefined && (state.cookie || token())) {
        signOut("Signed out: " + (e.message || "401"));
      }
      throw new ApiError(response.status, e.field || null, e.message || response.statusText);
    }
    return response;
  }

  async function call(method, path, options) {
    const response = await request(method, path, options);
    try { return await response.json(); } catch (err) { return null; }
  }

  // A GET whose answer the browser saves as a file. The token goes in a header, so a
  // plain link cannot do it: the answer is fetched, then offered from a Blob URL.
  async function download(path, fallbackName) {
    const response = await request("GET", path);
    const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
    const name = match ? match[1] : fallbackName;
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: name });
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    return { name, size: blob.size };
  }

  // A picture the API gives (a person's, on an inbox card) as a Blob URL an <img> can
  // show: the token goes in a header, which an <img src> cannot send. Kept per path for
  // the page's life (a picture changes at most daily, under a new ref).
  const pictures = new Map();
  function pictureUrl(path) {
    if (!pictures.has(path)) {
      pictures.set(path, request("GET", path).then((r) => r.blob())
        .then((blob) => URL.createObjectURL(blob))
        .catch((err) => { pictures.delete(path); throw err; }));
    }
    return pictures.get(path);
  }

  // --- confirmations and deletion jobs --------------------------------------------------
  // A destructive action runs only after its own "confirm" button in the box is clicked;
  // Cancel (or asking again) closes the box and does nothing.
  function askFirst(boxId, message, confirmLabel, action) {
    const box = $(boxId);
    const close = () => { box.replaceChildren(); show(box, false); };
    const go = el("button", { type: "button", className: "danger-solid confirm-ok" }, confirmLabel);
    const cancel = el("button", { type: "button", className: "secondary confirm-cancel" }, "Cancel");
    go.addEventListener("click", () => { close(); action(); });
    cancel.addEventListener("click", close);
    box.replaceChildren(el("p", {}, message), el("div", { className: "actions" }, go, cancel));
    show(box, true);
    cancel.focus();
  }

  function closeConfirms() {
    for (const id of ["channel-confirm", "user-confirm"]) { $(id).replaceChildren(); show($(id), false); }
  }

  const jobTimers = new Map();  // status element id -> timeout of its job's next poll

  function stopJobs() {
    for (const timer of jobTimers.values()) clearTimeout(timer);
    jobTimers.clear();
  }

  // Shows a deletion job in `statusId` and polls it until it is done or failed.
  function watchJob(statusId, label, job, onDone) {
    if (jobTimers.has(statusId)) clearTimeout(jobTimers.get(statusId));
    jobTimers.delete(statusId);
    const render = (j) => {
      const node = $(statusId);
      node.className = "status" + (j.status === "done" ? " ok" : j.status === "failed" ? " error" : "");
      const counts = Object.entries(j.counts || {}).map(([k, v]) => `${k} ${v}`).join(", ");
      node.replaceChildren(label + ": deletion job ", el("code", { className: "job-id" }, j.id),
        " ", el("span", { className: "job-status" }, j.status),
        counts ? ` (${counts})` : "", j.error ? ` (${j.error})` : "");
    };
    const tick = async () => {
      let current;
      try {
        current = await call("GET", "/deletions/" + encodeURIComponent(job.id));
      } catch (err) {
        jobTimers.delete(statusId);
        failed(statusId)(err);
        return;
      }
      render(current);
      if (current.status === "done" || current.status === "failed") {
        jobTimers.delete(statusId);
        if (current.status === "done" && onDone) await onDone();
        return;
      }
      jobTimers.set(statusId, setTimeout(tick, POLL_MS));
    };
    render(job);
    jobTimers.set(statusId, setTimeout(tick, POLL_MS / 4));
  }

  function failed(statusId) {
    return (err) => {
      if (err instanceof ApiError) say(statusId, err.describe(), "error");
      else { say(statusId, String(err), "error"); }
    };
  }

  // --- sections: the app's pages, one shown at a time ---------------------------------
  // The address's fragment names the page (#inbox, #channels, …), so the browser's back
  // button, a bookmark or a reload comes back to it. Another script adds to a page with
  // MTDesk.onSection(name, callback): callback(sectionElement) runs each time the page is
  // shown, after a sign-in or a change of tenant has loaded the data (and at once if the
  // page is showing), e.g. to mount a view into #inbox-view. A rejected promise it returns
  // is shown in the page's "<name>-status" line when there is one.
  const SECTIONS = ["inbox", "channels", "bot", "knowledge", "analytics", "billing",
                    "privacy", "team"];
  const OWNER_SECTIONS = new Set(["billing", "team"]);
  const LABELS = { inbox: "Inbox", channels: "Channels", bot: "Bot", knowledge: "Knowledge",
                   analytics: "Analytics", billing: "Billing", privacy: "Privacy", team: "Team" };
  const sectionHooks = new Map();  // section name -> callbacks run when it is shown
  let current = null;

  function allowed(name) {
    return SECTIONS.includes(name) && !(state.role === "agent" && OWNER_SECTIONS.has(name));
  }

  function wanted() {
    const name = location.hash.slice(1);
    return allowed(name) ? name : "inbox";
  }

  function runHooks(name) {
    for (const callback of sectionHooks.get(name) || []) {
      try {
        const done = callback($(name));
        if (done && typeof done.catch === "function") {
          done.catch((err) => ($(name + "-status") ? failed(name + "-status")(err) : console.error(err)));
        }
      } catch (err) { console.error(err); }
    }
  }

  // `quiet`: signing in shows the page at once; its hooks run once the data has loaded.
  function showSection(name, quiet) {
    if (!allowed(name)) name = "inbox";
    current = name;
    for (const s of SECTIONS) show($(s), s === name);
    for (const link of document.querySelectorAll("#sections a")) {
      if (link.dataset.section === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = LABELS[name] + " · MT Desk console";
    if (!quiet && !$("console").hidden) runHooks(name);
  }

  function onSection(name, callback) {
    if (!sectionHooks.has(name)) sectionHooks.set(name, []);
    sectionHooks.get(name).push(callback);
    if (current === name && !$("console").hidden) runHooks(name);
  }

  // Shows a page and puts its name in the address (a new history entry).
  function go(name) {
    if (location.hash === "#" + name) showSection(name);
    else location.hash = name;
  }

  function enterConsole() {
    show($("signin-error"), false);
    show($("signin"), false);
    show($("console"), true);
    show($("signout"), true);
    showSection(wanted(), true);
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
    enterConsole();
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

  // A person signed in with the session cookie (GET /auth/me answered with a user).
  async function enterWithSession(me) {
    Object.assign(state, { operator: false, cookie: true, csrf: me.csrf_token,
                           role: me.role, tenantId: me.tenant_id });
    document.body.dataset.role = me.role;
    enterConsole();
    const tenant = await call("GET", "/tenant");
    $("who").textContent = `${me.user.name} (${me.role}) · ${tenant.name}`;
    show($("who"), true);
    show($("tenant-picker"), false);
    await loadAll();
  }

  function signOut(why) {
    if (state.cookie) {
      fetch(API + "/auth/logout", { method: "POST", credentials: "same-origin",
                                    headers: { "X-CSRF-Token": state.csrf || "" } })
        .catch(() => {});
    }
    Object.assign(state, { cookie: false, csrf: null, role: "owner" });
    delete document.body.dataset.role;
    sessionStorage.removeItem(TOKEN_KEY);
    stopPolling();
    stopJobs();
    Object.assign(state, { operator: false, tenantId: null, bot: null, thread: null });
    show($("console"), false);
    current = null;
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
    stopJobs();
    closeConfirms();
    for (const id of ["channel-job", "user-job", "privacy-status"]) say(id, "", "");
    await Promise.all([
      loadRetention().catch(failed("privacy-status")),
      loadChannels().catch(failed("channels-status")),
      loadBot().catch(failed("bot-status")),
      loadSources().catch(failed("knowledge-status")),
      loadConversations(false).catch(failed("conversations-status")),
      ...extraLoads.map((load) => load().catch(failed("channels-status"))),
    ]);
    if (current) runHooks(current);
  }
  const extraLoads = [];

  // --- channels -------------------------------------------------------------------------
  async function loadChannels() {
    const { channels } = await call("GET", "/channels");
    $("channel-rows").replaceChildren(...channels.map((c) => el("tr", { dataset: { id: c.id } },
      el("td", {}, c.channel), el("td", {}, c.account_id),
      el("td", { className: "channel-status" },
         c.health && c.health !== "ok" ? `${c.status} (${c.health})` : c.status),
      el("td", {}, c.health_reason || c.disconnected_reason || ""),
      el("td", {}, when(c.connected_ms) + (c.token_source ? ` · ${c.token_source}` : "")),
      el("td", {}, el("code", {}, c.id)), el("td", {}, disconnectButton(c)))));
    show($("channels-empty"), channels.length === 0);
  }

  // DELETE /channels/{id}: the token and routing go at once, then a deletion job erases
  // the account's data and, last, the channel record itself (docs/privacy.md).
  function disconnectButton(c) {
    const label = `${c.channel} account ${c.account_id}`;
    return el("button", { type: "button", className: "danger", onclick: () => askFirst(
      "channel-confirm",
      `Disconnect ${label} and erase its data? Its access token is deleted and its messages ` +
      "are no longer received or answered, from now on. A deletion job then erases all of " +
      "this account's data here: every conversation and message, conversation contexts, " +
      "its users' restriction flags, and this channel record. The job usually takes " +
      "minutes (the promise is within 30 days). This cannot be undone.",
      "Disconnect and erase", () => disconnect(c, label).catch(failed("channel-job"))) },
    "Disconnect…");
  }

  async function disconnect(c, label) {
    say("channel-job", "Working…", "");
    const record = await call("DELETE", "/channels/" + encodeURIComponent(c.id));
    await loadChannels();
    watchJob("channel-job", `Disconnected ${label}; erasing its data`,
             { id: record.deletion_job, status: "queued" },
             () => Promise.all([loadChannels().catch(failed("channels-status")),
                                loadConversations(false).catch(failed("conversations-status"))]));
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

  function resyncButton(source) {
    return el("button", { type: "button", className: "resync", onclick: (event) => {
      event.currentTarget.disabled = true;
      call("POST", "/knowledge/" + encodeURIComponent(source.id) + "/resync")
        .then(() => { say("knowledge-status", `Re-syncing ${source.name}.`, "ok"); return loadSources(); })
        .catch(failed("knowledge-status"));
    } }, "Re-sync");
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
        el("td", {}, el("div", { className: "actions" }, resyncButton(s), deleteButton(s))));
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

  async function uploadFile(form) {
    const input = form.elements.file;
    if (!input.files.length) throw new ApiError(400, "file", "choose a file first");
    const data = new FormData();
    data.append("file", input.files[0], input.files[0].name);
    const source = await call("POST", "/knowledge", { form: data });
    form.reset();
    say("knowledge-status", `Uploaded ${source.name}: ${source.status}.`, "ok");
    await loadSources();
  }

  // --- privacy --------------------------------------------------------------------------
  async function exportAll() {
    const file = await download("/export", "mtdesk-export.json");
    say("privacy-status", `Exported all data: ${file.name} (${file.size} bytes).`, "ok");
  }

  function endUser(form) {
    const channel = form.elements.channel.value;
    const userId = form.elements.user_id.value.trim();
    if (!userId) throw new ApiError(400, "user_id", "is required");
    return { channel, userId,
             path: "/users/" + encodeURIComponent(channel) + "/" + encodeURIComponent(userId) };
  }

  async function exportUser(form) {
    const who = endUser(form);
    const file = await download(who.path + "/export", `mtdesk-export-${who.channel}.json`);
    say("user-job", `Exported ${who.channel} user ${who.userId}: ${file.name} (${file.size} bytes).`, "ok");
  }

  function eraseUser() {
    let who;
    try { who = endUser($("user-form")); } catch (err) { failed("user-job")(err); return; }
    const label = `${who.channel} user ${who.userId}`;
    askFirst("user-confirm",
      `Erase all data of ${label}? A deletion job deletes every conversation with this ` +
      "person: their messages and your replies, conversation contexts and their restriction " +
      "flag. This cannot be undone; export it first if you need a copy.",
      "Erase this user", () => {
        say("user-job", "Working…", "");
        call("DELETE", who.path).then((answer) => {
          $("user-form").elements.user_id.value = "";
          watchJob("user-job", `Erasing ${label}`, answer.job,
                   () => loadConversations(false).catch(failed("conversations-status")));
        }).catch(failed("user-job"));
      });
  }

  function showRetention(r) {
    $("retention-now").textContent =
      `Messages are kept ${r.days} days, then deleted (at most ${r.max_days}).`;
    const input = $("retention-form").elements.days;
    input.value = String(r.days);
    input.max = String(r.max_days);
  }

  async function loadRetention() { showRetention(await call("GET", "/retention")); }

  async function saveRetention(form) {
    const raw = form.elements.days.value.trim();
    const days = /^[0-9]+$/.test(raw) ? Number(raw) : raw;
    showRetention(await call("PUT", "/retention", { body: { days } }));
    say("privacy-status", "Retention saved.", "ok");
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
    window.addEventListener("hashchange", () => {
      const name = location.hash.slice(1);
      if (SECTIONS.includes(name) && !$("console").hidden) showSection(name);
    });
    $("tenant-select").addEventListener("change", (event) => {
      state.tenantId = event.target.value;
      loadAll();
    });
    onSubmit("channel-form", connectChannel, "channels-status");
    onSubmit("bot-form", saveBot, "bot-status");
    onSubmit("url-form", addUrl, "knowledge-status");
    onSubmit("qa-form", addQa, "knowledge-status");
    onSubmit("file-form", uploadFile, "knowledge-status");
    onSubmit("user-form", exportUser, "user-job");
    onSubmit("retention-form", saveRetention, "privacy-status");
    $("user-erase").addEventListener("click", eraseUser);
    $("export-all").addEventListener("click", (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      say("privacy-status", "Exporting…", "");
      exportAll().catch(failed("privacy-status")).finally(() => { button.disabled = false; });
    });
    $("sources-refresh").addEventListener("click",
      () => loadSources().catch(failed("knowledge-status")));
    $("conversations-refresh").addEventListener("click",
      () => loadConversations(false).catch(failed("conversations-status")));
    $("conversations-more").addEventListener("click",
      () => loadConversations(true).catch(failed("conversations-status")));
    $("messages-more").addEventListener("click",
      () => openThread(state.thread, true).catch(failed("conversations-status")));
    const saved = token();
    if (saved) {
      signIn(saved).catch((err) => signOut(err instanceof ApiError ? err.describe() : String(err)));
    } else {
      // A session cookie from an earlier sign-in (or Meta's dialog sending us back)?
      call("GET", "/auth/me").then((me) => (me && me.user ? enterWithSession(me) : null))
        .catch(() => {});
    }
  });

  window.MTDesk = { $, el, show, say, when, call, ApiError, failed, onSubmit, askFirst,
                    enterWithSession, state, extraLoads, loadChannels, onSection, go,
                    showSection, download, pictureUrl };
})();

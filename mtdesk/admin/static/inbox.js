// MT Desk console: the inbox. Conversations as people see them (name, channel, last
// message, status, unread), filtered and searched; a conversation's transcript kept live
// by the server's events (GET api/v1/inbox/events: server-sent events read over fetch,
// so a bearer key works as well as the session cookie; no polling); a person replies,
// hands back to the bot, assigns, closes and reopens. Mounted in #inbox-view through
// MTDesk.onSection("inbox"). Text from the API goes through text nodes only.
"use strict";

(function () {
  const M = window.MTDesk;
  if (!M) return;
  const { $, el, show, say, when, call, ApiError } = M;
  const API = "api/v1";
  const TOKEN_KEY = "mtdesk.admin.token";
  const MARKS = { sent: "✓ sent", delivered: "✓✓ delivered", read: "✓✓ read",
                  failed: "✗ failed", received: "", skipped: "" };

  const inbox = {
    mounted: false, open: null, card: null, lastEntry: null, rows: new Map(),
    feed: null, feedTimer: null, feedTenant: null, templates: [], team: null,
  };

  // --- the view ------------------------------------------------------------------------
  function mount(root) {
    const view = $("inbox-view");
    if (inbox.mounted) return view;
    inbox.mounted = true;
    view.append(
      el("div", { className: "inbox" },
        el("div", { className: "inbox-list" },
          el("form", { id: "inbox-filters", className: "inline", role: "search" },
            el("label", {}, "Status", el("select", { id: "inbox-filter-status" },
              el("option", { value: "" }, "all"), el("option", { value: "bot" }, "bot"),
              el("option", { value: "human" }, "human"), el("option", { value: "closed" }, "closed"))),
            el("label", {}, "Channel", el("select", { id: "inbox-filter-channel" },
              el("option", { value: "" }, "all"), el("option", { value: "messenger" }, "Messenger"),
              el("option", { value: "instagram" }, "Instagram"),
              el("option", { value: "whatsapp" }, "WhatsApp"))),
            el("label", {}, "Search", el("input", { id: "inbox-search", type: "search",
              placeholder: "name or text", maxlength: "200" }))),
          el("ul", { id: "inbox-rows", className: "inbox-rows" }),
          el("p", { className: "empty", id: "inbox-empty", hidden: "" }, "No conversation here."),
          el("p", { className: "status", id: "inbox-live", role: "status" })),
        el("div", { className: "inbox-thread", id: "inbox-thread", hidden: "" },
          el("div", { className: "inbox-head" },
            el("h3", { id: "inbox-title" }),
            el("span", { id: "inbox-badge", className: "badge" })),
          el("div", { className: "inbox-actions" },
            el("button", { type: "button", id: "inbox-handback", className: "secondary" }, "Hand back to the bot"),
            el("button", { type: "button", id: "inbox-close", className: "secondary" }, "Close"),
            el("button", { type: "button", id: "inbox-reopen", className: "secondary" }, "Reopen"),
            el("label", { className: "check" }, "Assigned to",
              el("select", { id: "inbox-assign" }, el("option", { value: "" }, "nobody")))),
          el("ol", { id: "inbox-messages", className: "inbox-messages" }),
          el("form", { id: "inbox-reply" },
            el("label", {}, "Reply as a person",
              el("textarea", { name: "text", id: "inbox-text", rows: "3", maxlength: "8000" })),
            el("div", { id: "inbox-template-box", hidden: "" },
              el("label", {}, "Or an approved template (WhatsApp, outside 24 h)",
                el("select", { id: "inbox-template" }, el("option", { value: "" }, "none"))),
              el("label", {}, "Its parameters, one per line",
                el("textarea", { id: "inbox-params", rows: "2" }))),
            el("button", { type: "submit", id: "inbox-send" }, "Send")),
          el("p", { className: "status", id: "inbox-status", role: "status" }))));
    $("inbox-filter-status").addEventListener("change", () => refresh());
    $("inbox-filter-channel").addEventListener("change", () => refresh());
    let typing = null;
    $("inbox-search").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => refresh(), 250);
    });
    $("inbox-filters").addEventListener("submit", (ev) => { ev.preventDefault(); refresh(); });
    $("inbox-reply").addEventListener("submit", (ev) => { ev.preventDefault(); reply().catch(problem); });
    $("inbox-handback").addEventListener("click", () => act("handback").catch(problem));
    $("inbox-close").addEventListener("click", () => act("close").catch(problem));
    $("inbox-reopen").addEventListener("click", () => act("reopen").catch(problem));
    $("inbox-assign").addEventListener("change", () => assign().catch(problem));
    return view;
  }

  function problem(err) {
    say("inbox-status", err instanceof ApiError ? err.describe() : String(err), "error");
  }

  function path(conv, action) {
    return "/conversations/" + encodeURIComponent(conv) + (action ? "/" + action : "");
  }

  function label(card) { return card.name || card.user_id || card.conversation; }

  // --- the list ------------------------------------------------------------------------
  function filters() {
    const params = { limit: "50" };
    const status = $("inbox-filter-status").value;
    const channel = $("inbox-filter-channel").value;
    const q = $("inbox-search").value.trim();
    if (status) params.status = status;
    if (channel) params.channel = channel;
    if (q) params.q = q;
    return params;
  }

  function matches(card) {
    const f = filters();
    if (f.status && card.status !== f.status) return false;
    if (f.channel && card.channel !== f.channel) return false;
    if (f.q) {
      const q = f.q.toLocaleLowerCase();
      return [card.name, card.user_id, card.last_text].some((v) => (v || "").toLocaleLowerCase().includes(q));
    }
    return true;
  }

  // The person's picture, when the shard kept one with the conversation (never loaded
  // from Meta's address: the console loads nothing from another host).
  function avatar(card) {
    if (!card.picture_ref) return null;
    const img = el("img", { className: "avatar", alt: "" });
    M.pictureUrl(path(card.conversation, "media/" + card.picture_ref))
      .then((url) => { img.src = url; })
      .catch(() => img.remove());
    return img;
  }

  function rowOf(card) {
    const li = el("li", { dataset: { conversation: card.conversation, status: card.status },
                          className: "inbox-row" + (inbox.open === card.conversation ? " open" : "") },
      el("button", { type: "button", className: "inbox-open", onclick: () => openConversation(card.conversation).catch(problem) },
        el("span", { className: "who" }, avatar(card), label(card)),
        el("span", { className: "channel" }, card.channel),
        el("span", { className: "badge " + card.status }, card.status),
        card.unread ? el("span", { className: "unread", title: "unread" }, String(card.unread)) : null,
        el("span", { className: "line" }, card.last_text || ""),
        el("span", { className: "meta" }, when(card.last_activity_ms))));
    return li;
  }

  function place(card) {
    const rows = $("inbox-rows");
    const old = inbox.rows.get(card.conversation);
    if (old) old.remove();
    inbox.rows.delete(card.conversation);
    if (!matches(card)) { show($("inbox-empty"), rows.children.length === 0); return; }
    const li = rowOf(card);
    inbox.rows.set(card.conversation, li);
    // newest first: before the first row less recently active
    let before = null;
    for (const other of rows.children) {
      if (Number(other.dataset.activity || 0) < card.last_activity_ms) { before = other; break; }
    }
    li.dataset.activity = String(card.last_activity_ms);
    rows.insertBefore(li, before);
    show($("inbox-empty"), false);
  }

  async function refresh() {
    const data = await call("GET", "/conversations", { params: filters() });
    $("inbox-rows").replaceChildren();
    inbox.rows.clear();
    for (const card of data.conversations) place(card);
    show($("inbox-empty"), data.conversations.length === 0);
  }

  // --- one conversation ----------------------------------------------------------------
  function messageItem(m) {
    const who = m.kind === "mention_content" ? "mention" + (m.user_name ? " by @" + m.user_name : "")
      : m.direction === "in" ? "customer" : m.kind === "agent" ? (m.author ? "person (" + m.author + ")" : "person") : m.kind === "reply" ? "bot" : m.kind;
    const mark = m.direction === "out" ? (MARKS[m.status] || m.status || "") : "";
    return el("li", { className: (m.direction === "in" ? "in" : "out") + " kind-" + m.kind,
                      dataset: { entry: m.entry, messageId: m.message_id || "" } },
      el("div", { className: "meta" }, who + " · " + when(m.timestamp_ms)),
      el("div", { className: "text" }, m.text || (m.attachments && m.attachments.length ? "[" + m.attachments[0].type + "]" : "")),
      m.direction === "out" ? el("div", { className: "mark", dataset: { status: m.status || "" } },
        mark + (m.status === "failed" && m.reason ? ": " + m.reason : "")) : null);
  }

  // What was fetched of a message's files (a "media" entry): shown under that message,
  // a voice note with its transcript. A later entry (a retried download) replaces the
  // file of the same position.
  const MEDIA_STATUS = { failed: "could not be downloaded", too_large: "too large to keep" };

  function mediaItem(conv, r) {
    const name = r.filename || r.type || "file";
    const status = MEDIA_STATUS[r.status];
    const file = r.status === "stored" && r.ref
      ? el("button", { type: "button", className: "link",
                       onclick: () => M.download(path(conv, "media/" + r.ref), name).catch(problem) },
        "[" + name + "]")
      : el("span", {}, "[" + name + "]" + (status ? " " + status : ""));
    return el("div", { className: "media-item", dataset: { index: String(r.index), status: r.status || "" } },
      file, r.transcript ? el("div", { className: "transcript" }, "Transcript: " + r.transcript) : null);
  }

  function showMedia(m) {
    const li = document.querySelector(`#inbox-messages li[data-message-id="${CSS.escape(m.reply_to || "")}"]`);
    if (!li) return;
    let box = li.querySelector(".media");
    if (!box) {
      box = el("div", { className: "media" });
      li.append(box);
    }
    for (const r of m.media || []) {
      const item = mediaItem(inbox.open, r);
      const old = box.querySelector(`.media-item[data-index="${r.index}"]`);
      if (old) old.replaceWith(item); else box.append(item);
    }
  }

  function addMessage(m) {
    if (!m.entry || document.querySelector(`#inbox-messages li[data-entry="${CSS.escape(m.entry)}"]`)) return;
    if (m.kind === "media") {
      showMedia(m);
      inbox.lastEntry = m.entry;
      return;
    }
    if (m.kind === "user_changed") return;
    $("inbox-messages").append(messageItem(m));
    inbox.lastEntry = m.entry;
    const list = $("inbox-messages");
    list.scrollTop = list.scrollHeight;
  }

  function setMark(entry, status) {
    const li = document.querySelector(`#inbox-messages li[data-entry="${CSS.escape(entry)}"] .mark`);
    if (!li) return;
    li.dataset.status = status;
    li.textContent = MARKS[status] || status;
  }

  function showCard(card) {
    inbox.card = card;
    $("inbox-title").textContent = label(card) + " · " + card.channel;
    const badge = $("inbox-badge");
    badge.textContent = card.status;
    badge.className = "badge " + card.status;
    show($("inbox-handback"), card.status === "human");
    show($("inbox-close"), card.status !== "closed");
    show($("inbox-reopen"), card.status === "closed");
    const pick = $("inbox-assign");
    if (card.assignee && ![...pick.options].some((o) => o.value === card.assignee)) {
      pick.append(el("option", { value: card.assignee }, card.assignee));
    }
    pick.value = card.assignee || "";
    show($("inbox-template-box"), card.channel === "whatsapp");
  }

  async function loadTeam() {
    if (inbox.team !== null) return;
    inbox.team = [];
    try {
      const data = await call("GET", "/team");
      inbox.team = (data && (data.members || data.users || data.team)) || [];
    } catch (err) { inbox.team = []; }  // agents may not list the team: ids still show
    const pick = $("inbox-assign");
    for (const member of inbox.team) {
      if (member && member.id) pick.append(el("option", { value: member.id }, member.name || member.email || member.id));
    }
  }

  async function loadTemplates(card) {
    const pick = $("inbox-template");
    pick.replaceChildren(el("option", { value: "" }, "none"));
    inbox.templates = [];
    if (card.channel !== "whatsapp") return;
    try {
      const data = await call("GET", path(card.conversation, "templates"));
      inbox.templates = data.templates || [];
    } catch (err) { return; }  // not connected through Meta's signup: text only
    inbox.templates.forEach((t, i) => pick.append(
      el("option", { value: String(i) }, `${t.name} (${t.language}): ${t.body}`)));
  }

  async function openConversation(conv) {
    inbox.open = conv;
    inbox.lastEntry = null;
    for (const [key, li] of inbox.rows) li.classList.toggle("open", key === conv);
    show($("inbox-thread"), true);
    $("inbox-messages").replaceChildren();
    say("inbox-status", "");
    const card = await call("GET", path(conv));
    showCard(card);
    await loadMessages(conv);
    if (card.unread) {
      const read = await call("POST", path(conv, "read"), { body: {} });
      place(read);
    }
    loadTeam().catch(() => {});
    loadTemplates(card).catch(() => {});
  }

  async function loadMessages(conv) {
    for (;;) {
      const params = { limit: "200" };
      if (inbox.lastEntry) params.after = inbox.lastEntry;
      const data = await call("GET", path(conv, "messages"), { params });
      if (inbox.open !== conv) return;
      for (const m of data.messages) addMessage(m);
      if (!data.next) return;
    }
  }

  async function reply() {
    const conv = inbox.open;
    if (!conv) return;
    const text = $("inbox-text").value.trim();
    const chosen = $("inbox-template").value;
    let body;
    if (chosen !== "" && inbox.templates[Number(chosen)]) {
      const t = inbox.templates[Number(chosen)];
      const parameters = $("inbox-params").value.split("\n").map((p) => p.trim()).filter((p) => p);
      body = { template: { name: t.name, language: t.language, parameters } };
    } else {
      body = { text };
    }
    say("inbox-status", "Sending…");
    const answer = await call("POST", path(conv, "reply"), { body });
    $("inbox-text").value = "";
    $("inbox-params").value = "";
    $("inbox-template").value = "";
    say("inbox-status", answer.tag === "HUMAN_AGENT"
      ? "Sent as a human agent reply (outside the 24 h window). The bot is silent here until you hand back."
      : "Sent. The bot is silent here until you hand back.", "ok");
  }

  async function act(action) {
    if (!inbox.open) return;
    const card = await call("POST", path(inbox.open, action), { body: {} });
    showCard(card);
    place(card);
    say("inbox-status", { handback: "The bot answers again.", close: "Closed.", reopen: "Reopened." }[action], "ok");
  }

  async function assign() {
    if (!inbox.open) return;
    const value = $("inbox-assign").value;
    const card = await call("POST", path(inbox.open, "assign"), { body: { user_id: value || null } });
    showCard(card);
    place(card);
  }

  // --- the live feed: server-sent events over fetch ------------------------------------
  function feedUrl() {
    const query = new URLSearchParams();
    if (M.state.operator && M.state.tenantId) query.set("tenant_id", M.state.tenantId);
    const qs = query.toString();
    return API + "/inbox/events" + (qs ? "?" + qs : "");
  }

  function handle(event, data) {
    if (event === "conversation") {
      place(data);
      if (inbox.open === data.conversation) showCard(data);
    } else if (event === "message") {
      if (inbox.open === data.conversation) addMessage(data.message);
    } else if (event === "status") {
      if (inbox.open === data.conversation) setMark(data.entry, data.status);
    } else if (event === "ready") {
      say("inbox-live", "Live: new messages appear as they arrive.", "ok");
    }
  }

  async function readFeed(controller) {
    const headers = { Accept: "text/event-stream" };
    const key = sessionStorage.getItem(TOKEN_KEY);
    if (key) headers["Authorization"] = "Bearer " + key;
    const response = await fetch(feedUrl(), { headers, signal: controller.signal,
      credentials: key ? "omit" : "same-origin", cache: "no-store" });
    if (!response.ok || !response.body) throw new ApiError(response.status, null, "the live feed was refused");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) {
          try { handle(event, JSON.parse(data)); } catch (err) { console.warn(err); }
        }
      }
    }
  }

  function startFeed() {
    const tenant = M.state.tenantId || "self";
    if (inbox.feed && inbox.feedTenant === tenant) return;
    stopFeed();
    inbox.feedTenant = tenant;
    const controller = new AbortController();
    inbox.feed = controller;
    readFeed(controller).catch(() => {}).finally(() => {
      if (inbox.feed !== controller) return;  // stopped or replaced
      inbox.feed = null;
      say("inbox-live", "Reconnecting to the live feed…");
      // Back after a pause; what came meanwhile is read again from the API.
      inbox.feedTimer = setTimeout(() => {
        startFeed();
        refresh().catch(() => {});
        if (inbox.open) loadMessages(inbox.open).catch(() => {});
      }, 2000);
    });
  }

  function stopFeed() {
    clearTimeout(inbox.feedTimer);
    if (inbox.feed) inbox.feed.abort();
    inbox.feed = null;
  }

  M.onSection("inbox", async (section) => {
    mount(section);
    startFeed();
    await refresh();
    if (inbox.open && !inbox.rows.has(inbox.open)) {
      show($("inbox-thread"), false);
      inbox.open = null;
    }
  });
  document.getElementById("signout").addEventListener("click", () => {
    stopFeed();
    inbox.open = null;
    inbox.team = null;
    if (inbox.mounted) {
      $("inbox-rows").replaceChildren();
      inbox.rows.clear();
      show($("inbox-thread"), false);
    }
  });
})();

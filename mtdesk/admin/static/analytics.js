// MT Desk console, analytics: the figures of GET /admin/api/v1/analytics as tiles, a bar
// chart drawn here as SVG (no library, nothing from another host), a table per day and
// the failures by reason. Built on window.MTDesk (console.js); loaded when the page shows.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const DEFAULT_DAYS = 14;
  const SERIES = [["messages_in", "messages in"], ["bot_replies", "bot replies"],
                  ["human_replies", "human replies"]];

  document.addEventListener("DOMContentLoaded", () => {
    const M = window.MTDesk;
    const { $, el, say, call, failed, onSubmit } = M;

    function svg(tag, attrs, ...children) {
      const node = document.createElementNS(SVG, tag);
      for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
      for (const child of children) {
        node.append(child instanceof Node ? child : document.createTextNode(String(child)));
      }
      return node;
    }

    function isoDay(date) { return date.toISOString().slice(0, 10); }

    function duration(ms) {
      if (ms === null || ms === undefined) return "–";
      if (ms < 1000) return `${ms} ms`;
      if (ms < 120000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
      if (ms < 7200000) return `${Math.round(ms / 60000)} min`;
      return `${(ms / 3600000).toFixed(1)} h`;
    }

    function percent(rate) { return rate === null || rate === undefined ? "–" : `${Math.round(rate * 100)}%`; }

    function failures(f) { return Object.values(f.failures || {}).reduce((a, b) => a + b, 0); }

    // The range asked for: the form's dates, else the last DEFAULT_DAYS days (UTC).
    function range() {
      const f = $("analytics-form").elements;
      if (!f.to.value) f.to.value = isoDay(new Date());
      if (!f.from.value) {
        const from = new Date(f.to.value + "T00:00:00Z");
        from.setUTCDate(from.getUTCDate() - (DEFAULT_DAYS - 1));
        f.from.value = isoDay(from);
      }
      const params = { from: f.from.value, to: f.to.value };
      if (f.channel.value) params.channel = f.channel.value;
      return params;
    }

    function tiles(t) {
      const items = [
        ["Messages in", t.messages_in], ["Bot replies", t.bot_replies],
        ["Human replies", t.human_replies], ["Automation", percent(t.automation_rate)],
        ["Hand-offs", t.handoffs], ["Median reply", duration(t.reply_time_ms.median)],
        ["p95 reply", duration(t.reply_time_ms.p95)], ["Failures", failures(t)],
        ["LLM tokens", t.llm_tokens.total],
      ];
      $("analytics-totals").replaceChildren(...items.map(([label, value]) =>
        el("div", { className: "tile" }, el("span", { className: "tile-value" }, value),
           el("span", { className: "tile-label" }, label))));
    }

    // Bars per day: messages in, bot replies, human replies side by side.
    function chart(days) {
      const width = 720, height = 240, left = 36, bottom = 26, top = 12;
      const plotW = width - left - 8, plotH = height - top - bottom;
      const most = Math.max(1, ...days.flatMap((d) => SERIES.map(([k]) => d[k])));
      const step = Math.pow(10, Math.floor(Math.log10(most)));
      const ceiling = Math.ceil(most / step) * step;
      const slot = plotW / Math.max(1, days.length);
      const bar = Math.max(1, (slot * 0.8) / SERIES.length);
      const y = (v) => top + plotH - (v / ceiling) * plotH;
      const graph = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
                                 class: "bars", "aria-labelledby": "analytics-chart-title" },
        svg("title", { id: "analytics-chart-title" },
            `Messages in, bot replies and human replies per day, ${days.length} days`));
      for (const tick of [0, ceiling / 2, ceiling].filter(Number.isInteger)) {
        graph.append(svg("line", { x1: left, x2: width - 8, y1: y(tick), y2: y(tick), class: "grid" }),
                     svg("text", { x: left - 4, y: y(tick) + 4, class: "axis", "text-anchor": "end" },
                         tick));
      }
      const every = Math.ceil(days.length / 8);
      days.forEach((d, i) => {
        const x0 = left + i * slot + slot * 0.1;
        SERIES.forEach(([key, label], j) => {
          const value = d[key];
          const rect = svg("rect", { x: x0 + j * bar, y: y(value), width: Math.max(0.5, bar - 1),
                                     height: Math.max(0, top + plotH - y(value)),
                                     class: `bar bar-${key}`, "data-day": d.day, "data-value": value },
                           svg("title", {}, `${d.day}: ${value} ${label}`));
          graph.append(rect);
        });
        if (i % every === 0) {
          graph.append(svg("text", { x: left + i * slot + slot / 2, y: height - 8, class: "axis",
                                     "text-anchor": "middle" }, d.day.slice(5)));
        }
      });
      const legend = el("p", { className: "legend" }, ...SERIES.map(([key, label]) =>
        el("span", { className: `key key-${key}` }, label)));
      $("analytics-chart").replaceChildren(graph, legend);
    }

    function table(days) {
      $("analytics-rows").replaceChildren(...days.slice().reverse().map((d) =>
        el("tr", { dataset: { day: d.day } }, el("td", {}, d.day), el("td", {}, d.messages_in),
           el("td", {}, d.bot_replies), el("td", {}, d.human_replies),
           el("td", {}, percent(d.automation_rate)), el("td", {}, d.handoffs),
           el("td", {}, duration(d.reply_time_ms.median)), el("td", {}, duration(d.reply_time_ms.p95)),
           el("td", {}, failures(d)), el("td", {}, d.llm_tokens.total))));
    }

    function failureList(t) {
      const rows = Object.entries(t.failures || {});
      $("analytics-failures").replaceChildren(...(rows.length
        ? rows.map(([reason, n]) => el("li", {}, `${reason}: ${n}`))
        : [el("li", { className: "empty" }, "No failed reply in this range.")]));
    }

    async function load() {
      const data = await call("GET", "/analytics", { params: range() });
      tiles(data.totals);
      chart(data.days);
      table(data.days);
      failureList(data.totals);
      say("analytics-status", `${data.from} to ${data.to}` +
                              (data.channel ? `, ${data.channel}` : ", all channels"), "");
    }

    onSubmit("analytics-form", load, "analytics-status");
    M.onSection("analytics", load);
  });
})();

// RC: the buggy's pack, cells, current, temperatures, RPM and speed, live; drive sessions.

import { api, getToken, live, query, url } from "../api.js";
import { TimeChart } from "../chart.js";
import { duration, el, fmt, when } from "../format.js";

const KPIS = [
  ["pack_voltage", "Pack", "V", 2],
  ["current", "Current", "A", 1],
  ["power", "Power", "W", 0],
  ["esc_temperature", "ESC", "°C", 0],
  ["motor_temperature", "Motor", "°C", 0],
  ["rpm", "RPM", "", 0],
  ["speed", "Speed", "km/h", 1],
  ["remaining", "Left", "%", 0],
];
const CHARTS = [
  ["Pack voltage", [["pack_voltage", "Pack", "V"]], true],
  ["Current", [["current", "Current", "A"]], true],
  ["Temperatures", [["esc_temperature", "ESC", "°C"], ["motor_temperature", "Motor", "°C"]], false],
  ["RPM", [["rpm", "RPM", ""]], true],
  ["Speed", [["speed", "Speed", "km/h"]], true],
];
const LIVE_WINDOW_MS = 5 * 60e3;
const CELL_EMPTY = 3.3;
const CELL_FULL = 4.2;

function cellClass(v) {
  return v < 3.5 ? "bad" : v < 3.7 ? "warn" : "";
}

export async function render(root, params) {
  if (params[0] === "session" && params[1]) return renderSession(root, params[1]);
  const devices = (await api("/api/devices")).filter((d) => d.kind === "rc" || d.metrics.includes("pack_voltage"));
  root.append(el("h1", { text: "RC" }));
  if (!devices.length) {
    root.append(el("p", { class: "empty", text: "No RC telemetry has arrived yet." }));
    root.append(await sessionList());
    return null;
  }
  const device = devices.find((d) => d.name === params[0]) || devices[0];
  root.append(el("div", { class: "tabs" }, devices.map((d) => el("a", { href: `#/rc/${encodeURIComponent(d.name)}`, class: d.name === device.name ? "active" : "", text: d.name }))));

  const kpiValues = new Map();
  const kpis = el(
    "div",
    { class: "kpis" },
    KPIS.map(([metric, label, unit, digits]) => {
      const value = el("span", { class: "value", "data-metric": metric, text: "–" });
      kpiValues.set(metric, [value, digits]);
      return el("div", { class: "kpi" }, el("div", { class: "label", text: label }), el("div", {}, value, unit ? el("span", { class: "unit", text: unit }) : null));
    }),
  );
  const cellsBox = el("div", { class: "cells", id: "cells" });
  root.append(
    el(
      "section",
      { class: "grid wide" },
      el("div", { class: "card" }, el("h2", { text: `${device.name}: live` }), kpis),
      el("div", { class: "card" }, el("h2", { text: "Cells" }), cellsBox),
    ),
  );

  const cells = new Map(); // label -> value
  function drawCells() {
    const entries = [...cells.entries()].sort((a, b) => a[0].localeCompare(b[0], undefined, { numeric: true }));
    if (!entries.length) {
      cellsBox.replaceChildren(el("p", { class: "empty", text: "No cell voltages yet." }));
      return;
    }
    cellsBox.replaceChildren(
      ...entries.map(([label, v]) => {
        const pct = Math.max(2, Math.min(100, ((v - CELL_EMPTY) / (CELL_FULL - CELL_EMPTY)) * 100));
        return el(
          "div",
          { class: "cell", "data-cell": label },
          el("span", { class: "v", text: fmt(v, 2) }),
          el("div", { class: `bar ${cellClass(v)}`, style: `height:${pct}%` }),
          el("span", { class: "l", text: label }),
        );
      }),
    );
  }
  function setValue(metric, value, tags) {
    const found = kpiValues.get(metric);
    if (found) found[0].textContent = fmt(value, found[1]);
    if (metric === "cell_voltage" && tags && tags.cell) cells.set(`cell ${tags.cell}`, value);
    else if (metric === "cell_voltage_min") cells.set("min", value);
    else if (metric === "cell_voltage_avg") cells.set("avg", value);
    else if (metric === "cell_voltage_max") cells.set("max", value);
    else return;
    if (!drawCells.pending) {
      drawCells.pending = true;
      requestAnimationFrame(() => {
        drawCells.pending = false;
        drawCells();
      });
    }
  }
  const latest = await api(`/api/latest?device=${encodeURIComponent(device.name)}`);
  for (const item of latest) if (!item.tags.session) setValue(item.metric, item.value, item.tags);
  drawCells();

  const chartGrid = el("div", { class: "grid wide" });
  root.append(el("h2", { style: "margin-top:1.2rem", text: "Last 5 minutes" }), chartGrid);
  const byMetric = new Map(); // metric -> [chart, line]
  const charts = [];
  const now = Date.now();
  await Promise.all(
    CHARTS.map(async ([title, lines, band]) => {
      const box = el("div", { class: "chart", "data-chart": lines[0][0] });
      chartGrid.append(el("div", { class: "card" }, box));
      const chart = new TimeChart(box, { title, lines: lines.map(([, label, unit]) => ({ label, unit })), band, windowMs: LIVE_WINDOW_MS });
      charts.push(chart);
      lines.forEach(([metric], i) => byMetric.set(metric, [chart, i]));
      const results = await Promise.all(lines.map(([metric]) => query(metric, { device: device.name, from: now - LIVE_WINDOW_MS, to: now, maxPoints: 600 })));
      chart.setFromQuery(results.map((r) => r.series.find((s) => !s.tags.session) || null));
    }),
  );
  root.append(await sessionList());

  const off = live.on((message) => {
    if (message.type !== "readings") return;
    for (const [dev, metric, value, ts, , tags] of message.r) {
      if (dev !== device.name || (tags && tags.session)) continue;
      setValue(metric, value, tags);
      const target = byMetric.get(metric);
      if (target) target[0].push(target[1], ts, value);
    }
  });
  live.subscribe({ devices: [device.name] });
  return () => {
    off();
    for (const chart of charts) chart.destroy();
  };
}

// Every vehicle's sessions (the live tab is one buggy; the history is all of them).
async function sessionList() {
  const sessions = await api("/api/sessions?limit=50");
  const card = el("section", { class: "card", id: "sessions", style: "margin-top:1rem" }, el("h2", { text: "Drive sessions" }));
  if (!sessions.length) {
    card.append(el("p", { class: "empty", text: "No drive sessions yet. A session is recorded once the motor has been still for a while after a run." }));
    return card;
  }
  const vehicles = new Set(sessions.map((s) => s.vehicle));
  const columns = [
    ["Start", (s) => el("a", { href: sessionHref(s), text: when(s.start_ms) })],
    vehicles.size > 1 ? ["Vehicle", (s) => s.vehicle] : null,
    ["Length", (s) => duration(s.duration_s)],
    ["Distance", (s) => withUnit(s.distance_km, 2, "km"), "num"],
    ["Top speed", (s) => withUnit(s.max_speed_kmh, 1, "km/h"), "num"],
    ["Used", (s) => withUnit(s.consumed_mah, 0, "mAh"), "num"],
    ["Energy", (s) => withUnit(s.energy_wh, 2, "Wh"), "num"],
    ["Min cell", (s) => withUnit(s.min_cell_voltage_load, 2, "V"), "num"],
    ["ESC / motor peak", (s) => (s.peak_esc_temperature ?? s.peak_motor_temperature) === null ? "–" : `${fmt(s.peak_esc_temperature, 0)} / ${fmt(s.peak_motor_temperature, 0)} °C`, "num"],
    ["Alerts", (s) => alertSummary(s.alerts)],
    ["Download", (s) => downloads(s)],
  ].filter(Boolean);
  card.append(
    el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "sessions" },
        el("thead", {}, el("tr", {}, columns.map(([h, , cls]) => el("th", { class: cls, text: h })))),
        el(
          "tbody",
          {},
          sessions.map((s) =>
            el(
              "tr",
              { class: "clickable", "data-session": s.id, onclick: (event) => openSession(event, s) },
              columns.map(([h, cell, cls]) => el("td", { class: cls, "data-col": h }, cell(s))),
            ),
          ),
        ),
      ),
    ),
  );
  return card;
}

function sessionHref(s) {
  return `#/rc/session/${encodeURIComponent(s.id)}`;
}

function openSession(event, s) {
  if (event.target.closest("a, button")) return; // a link or a download in the row does its own thing
  location.hash = sessionHref(s);
}

function withUnit(value, digits, unit) {
  return value === null || value === undefined ? "–" : `${fmt(value, digits)} ${unit}`;
}

function alertSummary(alerts) {
  if (!alerts || !alerts.length) return el("span", { class: "muted", text: "none" });
  const worst = alerts.some((a) => a.severity === "critical") ? "bad" : "warn";
  return el("span", { class: `pill ${worst}`, title: alerts.map((a) => a.message).join("\n"), text: String(alerts.length) });
}

// The same files as `hub sessions export ID --format csv|json`.
function downloads(s) {
  const link = (format, label) =>
    el("a", {
      class: "download",
      href: url(`/api/sessions/${encodeURIComponent(s.id)}/export?format=${format}`),
      download: `${s.id}.${format === "json" ? "jsonl" : "csv"}`,
      "data-format": format,
      onclick: (event) => downloadWithToken(event, s, format),
      text: label,
    });
  return el("span", { class: "downloads" }, link("csv", "CSV"), link("json", "JSON"));
}

// When reading needs the token, a plain link would be refused: fetch with it instead.
async function downloadWithToken(event, s, format) {
  if (!sessionStorage.getItem("hub.readToken")) return;
  event.preventDefault();
  const response = await fetch(event.currentTarget.href, { headers: { Authorization: `Bearer ${getToken()}` } });
  if (!response.ok) return;
  const blob = URL.createObjectURL(await response.blob());
  const a = el("a", { href: blob, download: `${s.id}.${format === "json" ? "jsonl" : "csv"}` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(blob), 10000);
}

async function renderSession(root, id) {
  const s = await api(`/api/sessions/${encodeURIComponent(id)}`);
  root.append(
    el("p", {}, el("a", { href: `#/rc/${encodeURIComponent(s.device)}`, text: `← ${s.device}` })),
    el("div", { class: "spread wrap" }, el("h1", { text: `${s.vehicle}: session of ${when(s.start_ms)}` }), el("span", { class: "muted" }, "Download ", downloads(s))),
    el(
      "div",
      { class: "card", id: "session-figures" },
      el(
        "div",
        { class: "kpis" },
        [
          ["Length", duration(s.duration_s), ""],
          ["Distance", fmt(s.distance_km, 2), "km"],
          ["Top speed", fmt(s.max_speed_kmh), "km/h"],
          ["Max current", fmt(s.max_current_a), "A"],
          ["Used", fmt(s.consumed_mah, 0), "mAh"],
          ["Energy", fmt(s.energy_wh, 2), "Wh"],
          ["Min cell", fmt(s.min_cell_voltage_load, 2), "V"],
          ["ESC peak", fmt(s.peak_esc_temperature, 0), "°C"],
          ["Motor peak", fmt(s.peak_motor_temperature, 0), "°C"],
          ["Pack peak", fmt(s.peak_pack_temperature, 0), "°C"],
        ].map(([label, value, unit]) =>
          el("div", { class: "kpi" }, el("div", { class: "label", text: label }), el("div", {}, el("span", { class: "value", text: value }), unit && value !== "–" ? el("span", { class: "unit", text: unit }) : null)),
        ),
      ),
    ),
    el(
      "div",
      { class: "card", id: "session-alerts", style: "margin-top:1rem" },
      el("h2", { text: "Alerts during the session" }),
      s.alerts.length
        ? el(
            "ul",
            { class: "alert-list" },
            s.alerts.map((a) =>
              el(
                "li",
                { "data-alert": String(a.id) },
                el("span", { class: `pill ${a.severity === "critical" ? "bad" : "warn"}`, text: a.severity }),
                " ",
                a.message,
                el("span", { class: "muted small", text: ` (${when(a.started_ms)}${a.resolved_ms ? ` to ${when(a.resolved_ms)}` : ", still firing"})` }),
              ),
            ),
          )
        : el("p", { class: "empty", text: "No alerts." }),
    ),
  );
  const grid = el("div", { class: "grid wide", style: "margin-top:1rem" });
  root.append(grid);
  const charts = [];
  await Promise.all(
    CHARTS.map(async ([title, lines, band]) => {
      const box = el("div", { class: "chart", "data-chart": lines[0][0] });
      grid.append(el("div", { class: "card" }, box));
      const chart = new TimeChart(box, { title, lines: lines.map(([, label, unit]) => ({ label, unit })), band, minSpan: 0 });
      charts.push(chart);
      const results = await Promise.all(lines.map(([metric]) => query(metric, { device: s.device, from: s.start_ms, to: s.end_ms, maxPoints: 800 })));
      chart.setFromQuery(results.map((r) => r.series.find((x) => !x.tags.session) || null));
    }),
  );
  return () => charts.forEach((c) => c.destroy());
}

// Overview: hub health, active alerts, and every device with its key values, live.

import { api, live } from "../api.js";
import { ago, aqiBand, aqiFromPm25, el, fmt } from "../format.js";

const KEY_METRICS = {
  airq: [["aqi_us", "AQI", "", 0], ["pm2_5", "PM2.5", "µg/m³", 1], ["co2", "CO₂", "ppm", 0], ["temperature", "Temp", "°C", 1]],
  rc: [["pack_voltage", "Pack", "V", 2], ["current", "Current", "A", 1], ["esc_temperature", "ESC", "°C", 0], ["remaining", "Left", "%", 0]],
};
const DEFAULT_METRICS = [];

function deviceKind(device) {
  if (device.kind === "airq" || device.kind === "rc") return device.kind;
  if (device.metrics.includes("pack_voltage")) return "rc";
  if (device.metrics.includes("pm2_5") || device.metrics.includes("co2")) return "airq";
  return "other";
}

// What the device itself says about being reachable. A device without an availability topic
// (the buggy's serial bridge, a plain MQTT publisher) says nothing: that is not "offline".
function availability(online) {
  const [state, text, title] =
    online === null || online === undefined
      ? ["unknown", "no availability topic", "This device does not announce online/offline; see when it last reported"]
      : online
        ? ["online", "online", "The device announced it is online"]
        : ["offline", "offline", "The device announced it is offline (or its connection dropped)"];
  return el("span", { class: `status ${state}`, "data-status": state, title }, el("span", { class: "dot" }), ` ${text}`);
}

export async function render(root) {
  const healthCard = el("section", { class: "card", id: "health" }, el("h2", { text: "Hub" }));
  const alertCard = el("section", { class: "card", id: "active-alerts" }, el("h2", { text: "Active alerts" }));
  const deviceGrid = el("div", { class: "grid", id: "devices" });
  root.append(
    el("div", { class: "grid wide" }, healthCard, alertCard),
    el("h1", { style: "margin-top:1.2rem", text: "Devices" }),
    deviceGrid,
  );

  const [health, devices, latest] = await Promise.all([api("/api/health"), api("/api/devices"), api("/api/latest")]);
  const cards = new Map();
  const values = new Map(); // "device|metric" -> element
  const lastSeen = new Map();

  function showHealth(h) {
    healthCard.replaceChildren(
      el("div", { class: "spread" }, el("h2", { text: "Hub" }), el("span", { class: `pill ${h.status === "ok" ? "ok" : "warn"}`, text: h.status })),
      el(
        "div",
        { class: "kpis" },
        kpiBox("Broker", h.broker, "value word"),
        kpiBox("Messages/s", fmt(h.messages_per_s, 1)),
        kpiBox("Stored", fmt(h.readings_stored, 0)),
        kpiBox("Rejected", fmt(h.rejected_total, 0)),
        kpiBox("Viewers", String(h.live_clients)),
      ),
      el("p", { class: "muted small", text: `Version ${h.version}, up ${Math.round(h.uptime_s / 60)} min` }),
    );
  }

  function kpiBox(label, value, valueClass = "value") {
    return el("div", { class: "kpi" }, el("div", { class: "label", text: label }), el("div", { class: valueClass, text: value }));
  }

  async function showAlerts() {
    try {
      const active = await api("/api/alerts");
      const items = active.length
        ? el(
            "ul",
            { class: "alert-list" },
            active.map((a) =>
              el(
                "li",
                { "data-alert": String(a.id) },
                el("span", { class: `pill ${a.severity === "critical" ? "bad" : "warn"}`, text: a.severity || "alert" }),
                " ",
                el("strong", { text: a.device || "" }),
                " ",
                a.message || a.rule || a.title || String(a.id),
              ),
            ),
          )
        : el("p", { class: "empty", text: "No active alerts." });
      alertCard.replaceChildren(el("h2", {}, "Active alerts ", el("a", { href: "#/alerts", class: "small", text: "all →" })), items);
    } catch (err) {
      alertCard.replaceChildren(el("h2", { text: "Active alerts" }), el("p", { class: "muted", text: err.status === 503 ? "Alerts are not configured on this hub." : err.message }));
    }
  }

  function addDevice(device) {
    const kind = deviceKind(device);
    const metrics = KEY_METRICS[kind] || DEFAULT_METRICS;
    const link = kind === "airq" ? `#/air/${encodeURIComponent(device.name)}` : kind === "rc" ? `#/rc/${encodeURIComponent(device.name)}` : null;
    const seen = el("span", { class: "muted small", text: ago(device.last_seen) });
    lastSeen.set(device.name, [seen, device.last_seen]);
    const status = availability(device.online);
    const kpis = el(
      "div",
      { class: "kpis" },
      metrics.map(([metric, label, unit, digits]) => {
        const value = el("span", { class: "value", "data-device": device.name, "data-metric": metric, "data-digits": String(digits), text: "–" });
        values.set(`${device.name}|${metric}`, value);
        return el("div", { class: "kpi" }, el("div", { class: "label", text: label }), el("div", {}, value, unit ? el("span", { class: "unit", text: unit }) : null));
      }),
    );
    const card = el(
      "article",
      { class: "card device", "data-device": device.name },
      el(
        "div",
        { class: "spread" },
        el("span", {}, link ? el("a", { class: "name", href: link, text: device.name }) : el("span", { class: "name", text: device.name })),
        seen,
      ),
      status,
      el("div", { class: "muted small", text: [kind, device.source, device.model].filter(Boolean).join(" · ") }),
      metrics.length ? kpis : el("div", { class: "muted small", text: `${device.metrics.length} metrics` }),
    );
    cards.set(device.name, card);
    deviceGrid.append(card);
  }

  const realAqi = new Set();
  function setValue(device, metric, value) {
    if (metric === "aqi_us_nowcast") {
      realAqi.add(device);
      metric = "aqi_us";
    } else if (metric === "aqi_us") realAqi.add(device);
    else if (metric === "pm2_5" && !realAqi.has(device)) setValue2(device, "aqi_us", aqiFromPm25(value));
    setValue2(device, metric, value);
  }

  function setValue2(device, metric, value) {
    const node = values.get(`${device}|${metric}`);
    if (!node) return;
    node.textContent = fmt(value, Number(node.dataset.digits));
    if (metric === "aqi_us") {
      const [label, colour, ink] = aqiBand(value);
      node.parentElement.parentElement.setAttribute("style", `background:${colour};color:${ink}`);
      node.parentElement.parentElement.title = label;
    }
  }

  showHealth(health);
  if (!devices.length) deviceGrid.append(el("p", { class: "empty", text: "No devices have reported yet." }));
  for (const device of devices) addDevice(device);
  for (const item of latest) setValue(item.device, item.metric, item.value);
  showAlerts();

  const off = live.on((message) => {
    if (message.type === "readings") {
      for (const [device, metric, value, ts] of message.r) {
        if (!cards.has(device)) {
          deviceGrid.querySelector(".empty")?.remove();
          addDevice({ name: device, kind: null, source: null, metrics: [metric], online: null, last_seen: ts });
        }
        setValue(device, metric, value);
        const seen = lastSeen.get(device);
        if (seen && ts > (seen[1] || 0)) seen[1] = ts;
      }
    } else if (message.type === "availability") {
      for (const [device, online] of message.a) {
        cards.get(device)?.querySelector(".status")?.replaceWith(availability(online));
      }
    } else if (message.type === "alert") {
      showAlerts();
    }
  });
  live.subscribe({});
  const timer = setInterval(async () => {
    for (const [node, ts] of lastSeen.values()) node.textContent = ago(ts);
    try {
      showHealth(await api("/api/health"));
    } catch {
      /* the next round will tell */
    }
  }, 5000);
  return () => {
    off();
    clearInterval(timer);
  };
}

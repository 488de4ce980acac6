// Air quality per room: AQI with its category colour, the readings, comfort and trends.

import { api, live, query } from "../api.js";
import { TimeChart } from "../chart.js";
import { aqiBand, aqiFromPm25, el, fmt } from "../format.js";

const KPIS = [
  ["pm2_5", "PM2.5", "µg/m³", 1],
  ["pm10", "PM10", "µg/m³", 1],
  ["co2", "CO₂", "ppm", 0],
  ["voc_index", "VOC index", "", 0],
  ["temperature", "Temperature", "°C", 1],
  ["humidity", "Humidity", "%", 0],
  ["dew_point", "Dew point", "°C", 1],
  ["comfort_score", "Comfort", "%", 0],
];
// Derived by the hub from other readings: say what an empty tile waits for.
const WAITS_FOR = {
  dew_point: "waits for temperature and humidity",
  comfort_score: "waits for two of temperature, humidity, CO₂, VOC, PM2.5",
};
const CHARTS = [
  ["pm2_5", "PM2.5", "µg/m³"],
  ["co2", "CO₂", "ppm"],
  ["voc_index", "VOC index", ""],
  ["comfort_score", "Comfort", "%"],
];
const RANGES = [["1h", 3600e3], ["6h", 6 * 3600e3], ["24h", 86400e3], ["7d", 7 * 86400e3]];

export async function render(root, [deviceName, rangeName = "6h"]) {
  const devices = (await api("/api/devices")).filter(
    (d) => d.kind === "airq" || d.metrics.includes("pm2_5") || d.metrics.includes("co2"),
  );
  root.append(el("h1", { text: "Air quality" }));
  if (!devices.length) {
    root.append(el("p", { class: "empty", text: "No air-quality nodes have reported yet." }));
    return null;
  }
  const device = devices.find((d) => d.name === deviceName) || devices[0];
  const range = RANGES.find(([name]) => name === rangeName) || RANGES[1];
  root.append(
    el("div", { class: "tabs" }, devices.map((d) => el("a", { href: `#/air/${encodeURIComponent(d.name)}/${range[0]}`, class: d.name === device.name ? "active" : "", text: d.name }))),
  );

  const aqiBox = el("div", { class: "aqi", id: "aqi" });
  const kpiValues = new Map();
  const kpis = el(
    "div",
    { class: "kpis" },
    KPIS.map(([metric, label, unit, digits]) => {
      const value = el("span", { class: "value", "data-metric": metric, text: "–" });
      kpiValues.set(metric, [value, digits]);
      const hint = WAITS_FOR[metric] ? el("div", { class: "hint", text: WAITS_FOR[metric] }) : null;
      return el("div", { class: "kpi" }, el("div", { class: "label", text: label }), el("div", {}, value, unit ? el("span", { class: "unit", text: unit }) : null), hint);
    }),
  );
  root.append(
    el(
      "section",
      { class: "grid wide" },
      el("div", { class: "card" }, el("h2", { text: device.name }), aqiBox),
      el("div", { class: "card" }, el("h2", { text: "Now" }), kpis),
    ),
  );

  let aqi = null;
  let estimated = false; // from the current PM2.5 until the hub has computed an AQI
  function showAqi() {
    const [label, colour, ink] = aqiBand(aqi);
    aqiBox.setAttribute("style", `background:${colour};color:${ink}`);
    aqiBox.dataset.category = label;
    aqiBox.replaceChildren(
      el("div", { class: "small", text: estimated ? "US AQI (estimate from current PM2.5)" : "US AQI (PM2.5)" }),
      el("div", { class: "num", text: aqi === null ? "–" : String(Math.round(aqi)) }),
      el("div", { class: "cat", text: label }),
    );
  }
  function setValue(metric, value) {
    if (metric === "aqi_us_nowcast" || (metric === "aqi_us" && (aqi === null || estimated))) {
      aqi = value;
      estimated = false;
      showAqi();
    } else if (metric === "pm2_5" && (aqi === null || estimated)) {
      aqi = aqiFromPm25(value);
      estimated = true;
      showAqi();
    }
    const found = kpiValues.get(metric);
    if (found) {
      found[0].textContent = fmt(value, found[1]);
      found[0].parentElement.parentElement.querySelector(".hint")?.remove();
    }
  }
  showAqi();
  const latest = await api(`/api/latest?device=${encodeURIComponent(device.name)}`);
  for (const item of latest.filter((i) => i.metric === "aqi_us")) setValue(item.metric, item.value);
  for (const item of latest.filter((i) => i.metric !== "aqi_us")) setValue(item.metric, item.value);

  const rangeTabs = el(
    "div",
    { class: "tabs" },
    RANGES.map(([name]) => el("a", { href: `#/air/${encodeURIComponent(device.name)}/${name}`, class: name === range[0] ? "active" : "", text: name })),
  );
  const chartGrid = el("div", { class: "grid wide" });
  root.append(el("h2", { style: "margin-top:1.2rem", text: "Trends" }), rangeTabs, chartGrid);
  const charts = new Map();
  const now = Date.now();
  await Promise.all(
    CHARTS.map(async ([metric, label, unit]) => {
      const box = el("div", { class: "chart", "data-chart": metric });
      chartGrid.append(el("div", { class: "card" }, box));
      const chart = new TimeChart(box, { title: label, lines: [{ label, unit }], band: true, windowMs: range[1] });
      charts.set(metric, chart);
      const result = await query(metric, { device: device.name, from: now - range[1], to: now, maxPoints: 500 });
      chart.setFromQuery([result.series[0] || null]);
    }),
  );

  const off = live.on((message) => {
    if (message.type !== "readings") return;
    for (const [dev, metric, value, ts] of message.r) {
      if (dev !== device.name) continue;
      setValue(metric, value);
      charts.get(metric)?.push(0, ts, value);
    }
  });
  live.subscribe({ devices: [device.name] });
  return () => {
    off();
    for (const chart of charts.values()) chart.destroy();
  };
}

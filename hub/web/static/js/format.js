// Formatting and the small facts the views share (AQI bands, units, thresholds).

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "style") node.setAttribute("style", value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function fmt(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const n = Number(value);
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString();
  return n.toFixed(digits);
}

export function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(ms).toLocaleString();
}

export function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "–";
}

export function duration(s) {
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

// US EPA AQI bands (the official colours).
export const AQI_BANDS = [
  [50, "Good", "#00e400"],
  [100, "Moderate", "#ffff00"],
  [150, "Unhealthy for sensitive groups", "#ff7e00"],
  [200, "Unhealthy", "#ff0000"],
  [300, "Very unhealthy", "#8f3f97"],
  [Infinity, "Hazardous", "#7e0023"],
];

export function aqiBand(aqi) {
  if (aqi === null || aqi === undefined) return ["No data", "var(--chip)", "var(--text)"];
  for (const [upper, label, colour] of AQI_BANDS) {
    if (aqi <= upper) return [label, colour, upper > 150 ? "#fff" : "#111"];
  }
  return ["Hazardous", "#7e0023", "#fff"];
}

// US EPA PM2.5 breakpoints (2024): an instant estimate when the hub has no AQI yet.
const PM25_BREAKPOINTS = [
  [0, 9.0, 0, 50], [9.1, 35.4, 51, 100], [35.5, 55.4, 101, 150],
  [55.5, 125.4, 151, 200], [125.5, 225.4, 201, 300], [225.5, 325.4, 301, 500],
];

export function aqiFromPm25(pm) {
  if (pm === null || pm === undefined || pm < 0) return null;
  const c = Math.floor(pm * 10) / 10;
  for (const [cLo, cHi, iLo, iHi] of PM25_BREAKPOINTS) {
    if (c <= cHi) return Math.round(((iHi - iLo) / (cHi - cLo)) * (Math.max(c, cLo) - cLo) + iLo);
  }
  return 500;
}

export function toast(message, ms = 2500) {
  const node = document.getElementById("toast");
  node.textContent = message;
  node.classList.remove("hidden");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => node.classList.add("hidden"), ms);
}

export function kpi(label, value, unit, attrs = {}) {
  return el(
    "div",
    { class: "kpi", ...attrs },
    el("div", { class: "label", text: label }),
    el("div", {}, el("span", { class: "value", text: value }), unit ? el("span", { class: "unit", text: unit }) : null),
  );
}

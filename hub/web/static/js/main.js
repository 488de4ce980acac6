// The dashboard shell: hash routes, theme, token, live-feed state and the alert badge.

import { api, getToken, live, setToken } from "./api.js";
import { toast } from "./format.js";
import * as overview from "./views/overview.js";
import * as air from "./views/air.js";
import * as rc from "./views/rc.js";
import * as alerts from "./views/alerts.js";
import * as deadLetters from "./views/deadletters.js";

const VIEWS = { overview, air, rc, alerts, "dead-letters": deadLetters };
const view = document.getElementById("view");
let cleanup = null;
let routeSeq = 0;

// -- theme: follows the system unless the toggle chose one -------------------------------------
function applyTheme() {
  const chosen = localStorage.getItem("hub.theme");
  if (chosen) document.documentElement.dataset.theme = chosen;
  else delete document.documentElement.dataset.theme;
  window.dispatchEvent(new Event("themechange"));
}

function currentTheme() {
  const chosen = document.documentElement.dataset.theme;
  if (chosen) return chosen;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

document.getElementById("theme-button").addEventListener("click", () => {
  localStorage.setItem("hub.theme", currentTheme() === "dark" ? "light" : "dark");
  applyTheme();
});
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);

// -- token -----------------------------------------------------------------------------------------
const dialog = document.getElementById("token-dialog");
const tokenInput = document.getElementById("token-input");

export function askToken() {
  return new Promise((resolve) => {
    tokenInput.value = "";
    dialog.returnValue = "";
    dialog.showModal();
    dialog.addEventListener(
      "close",
      () => {
        if (dialog.returnValue === "save" && tokenInput.value.trim()) {
          setToken(tokenInput.value.trim());
          toast("Token saved in this browser");
          resolve(true);
        } else if (dialog.returnValue === "forget") {
          setToken("");
          toast("Token forgotten");
          resolve(false);
        } else resolve(Boolean(getToken()));
        updateTokenButton();
      },
      { once: true },
    );
  });
}
window.hubAskToken = askToken;

function updateTokenButton() {
  const button = document.getElementById("token-button");
  button.textContent = getToken() ? "Token ✓" : "Token";
}
document.getElementById("token-button").addEventListener("click", () => askToken());

// -- live state and alert badge --------------------------------------------------------------------
const liveState = document.getElementById("live-state");
live.onState = (state) => {
  liveState.className = `live ${state}`;
  liveState.title = state === "on" ? "Live feed connected" : "Live feed reconnecting";
  document.body.dataset.live = state;
};

async function refreshAlertCount() {
  const badge = document.getElementById("alert-count");
  try {
    const active = await api("/api/alerts");
    const open = active.filter((a) => !a.acknowledged && !a.acknowledged_at && !a.acknowledged_by);
    badge.textContent = String(active.length);
    badge.className = active.length ? `pill ${open.length ? "bad" : ""}` : "pill hidden";
  } catch {
    badge.className = "pill hidden";
  }
}
live.on((message) => {
  if (message.type === "alert") refreshAlertCount();
});

// -- routing -----------------------------------------------------------------------------------------
async function route() {
  const seq = ++routeSeq;
  const [page = "overview", ...params] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const module = VIEWS[page] || overview;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === (VIEWS[page] ? page : "overview"));
  }
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.error(err);
    }
    cleanup = null;
  }
  view.replaceChildren();
  view.dataset.page = page;
  delete view.dataset.ready;
  try {
    const done = await module.render(view, params);
    if (seq !== routeSeq) {
      if (done) done();
      return;
    }
    cleanup = done || null;
    view.dataset.ready = "1";
  } catch (err) {
    console.error(err);
    view.append(Object.assign(document.createElement("p"), { className: "error", textContent: `Cannot show this page: ${err.message}` }));
  }
}

window.addEventListener("hashchange", route);
applyTheme();
updateTokenButton();
live.connect();
refreshAlertCount();
setInterval(refreshAlertCount, 30000);
route();

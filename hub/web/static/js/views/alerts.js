// Alerts: the active ones (acknowledge with the token) and the history.

import { api, live, withToken } from "../api.js";
import { el, toast, when } from "../format.js";

function text(alert) {
  return alert.message || alert.summary || alert.title || alert.rule || String(alert.id);
}

function since(alert) {
  return alert.started_ms || alert.raised_ms || alert.start_ms || alert.ts || alert.timestamp_ms || null;
}

function acked(alert) {
  return Boolean(alert.acknowledged || alert.acknowledged_by || alert.acknowledged_at || alert.acked_by);
}

export async function render(root) {
  root.append(el("h1", { text: "Alerts" }));
  const activeCard = el("section", { class: "card", id: "alerts-active" });
  const historyCard = el("section", { class: "card", id: "alerts-history", style: "margin-top:1rem" });
  root.append(activeCard, historyCard);

  async function refresh() {
    let active;
    try {
      active = await api("/api/alerts");
    } catch (err) {
      activeCard.replaceChildren(
        el("h2", { text: "Active" }),
        el("p", { class: "muted", text: err.status === 503 ? "No alert engine is configured on this hub." : `Cannot load alerts: ${err.message}` }),
      );
      historyCard.classList.add("hidden");
      return;
    }
    activeCard.replaceChildren(el("h2", { text: `Active (${active.length})` }));
    if (!active.length) activeCard.append(el("p", { class: "empty", text: "Nothing is wrong right now." }));
    else activeCard.append(table(active, true));
    const history = await api("/api/alerts/history?limit=100");
    historyCard.classList.remove("hidden");
    historyCard.replaceChildren(el("h2", { text: "History" }), history.length ? table(history, false) : el("p", { class: "empty", text: "No alerts yet." }));
  }

  function table(alerts, withAck) {
    return el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        {},
        el("thead", {}, el("tr", {}, ["Severity", "Device", "Alert", "Since", withAck ? "" : "State"].map((h) => el("th", { text: h })))),
        el(
          "tbody",
          {},
          alerts.map((a) =>
            el(
              "tr",
              { class: `alert-row ${a.severity || ""}`, "data-alert": String(a.id) },
              el("td", {}, el("span", { class: `pill ${a.severity === "critical" ? "bad" : a.severity === "warning" ? "warn" : ""}`, text: a.severity || "alert" })),
              el("td", { text: a.device || "" }),
              el("td", { text: text(a) }),
              el("td", { text: when(since(a)) }),
              el(
                "td",
                {},
                withAck
                  ? acked(a)
                    ? el("span", { class: "muted", "data-acked": "1", text: `acknowledged${a.acknowledged_by ? ` by ${a.acknowledged_by}` : ""}` })
                    : el("button", { class: "primary", "data-ack": String(a.id), onclick: () => acknowledge(a.id), text: "Acknowledge" })
                  : el("span", { class: "muted", text: a.state || (a.cleared_ms || a.ended_ms ? "cleared" : "") }),
              ),
            ),
          ),
        ),
      ),
    );
  }

  async function acknowledge(id) {
    try {
      const done = await withToken(() => api(`/api/alerts/${encodeURIComponent(id)}/ack`, { method: "POST", body: { by: "dashboard" } }));
      if (done) toast("Acknowledged");
    } catch (err) {
      toast(`Not acknowledged: ${err.message}`);
    }
    refresh();
  }

  await refresh();
  const off = live.on((message) => {
    if (message.type === "alert") refresh();
  });
  return off;
}

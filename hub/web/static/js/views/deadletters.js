// Dead letters: what ingest refused and why; replay after a fix, or purge.

import { api, withToken } from "../api.js";
import { el, toast, when } from "../format.js";

export async function render(root, [reason]) {
  root.append(el("h1", { text: "Dead letters" }));
  const controls = el("div", { class: "row", style: "margin-bottom:.8rem" });
  const listCard = el("section", { class: "card", id: "dead-letters" });
  const detailCard = el("section", { class: "card hidden", id: "dead-letter", style: "margin-top:1rem" });
  root.append(controls, listCard, detailCard);

  const metrics = await api("/api/dead-letters?limit=1000");
  const reasons = [...new Set(metrics.map((d) => d.reason))].sort();
  const select = el("select", { "aria-label": "Reason", onchange: () => (location.hash = `#/dead-letters/${encodeURIComponent(select.value)}`) },
    el("option", { value: "", text: "every reason" }),
    reasons.map((r) => el("option", { value: r, text: r, selected: r === reason })));
  controls.append(
    select,
    el("button", { class: "primary", id: "replay", onclick: () => replay(), text: "Replay" }),
    el("button", { class: "danger", id: "purge", onclick: () => purge(), text: "Purge" }),
  );

  async function load() {
    const rows = await api(`/api/dead-letters?limit=200${reason ? `&reason=${encodeURIComponent(reason)}` : ""}`);
    listCard.replaceChildren(el("h2", { text: `${rows.length}${rows.length === 200 ? "+" : ""} kept${reason ? ` for ${reason}` : ""}` }));
    if (!rows.length) {
      listCard.append(el("p", { class: "empty", text: "Nothing was refused." }));
      return;
    }
    listCard.append(
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          {},
          el("thead", {}, el("tr", {}, ["Received", "Reason", "Topic", "Detail", "Bytes", "Replayed"].map((h) => el("th", { text: h })))),
          el(
            "tbody",
            {},
            rows.map((d) =>
              el(
                "tr",
                { class: "clickable", "data-dead-letter": String(d.id), onclick: () => show(d.id) },
                el("td", { text: when(d.received_ts) }),
                el("td", {}, el("span", { class: "pill", text: d.reason })),
                el("td", { class: "mono", text: d.topic || "" }),
                el("td", { text: d.detail }),
                el("td", { class: "num", text: String(d.payload_bytes ?? "") }),
                el("td", { text: d.replayed_ts ? when(d.replayed_ts) : "" }),
              ),
            ),
          ),
        ),
      ),
    );
  }

  async function show(id) {
    const d = await api(`/api/dead-letters/${id}`);
    detailCard.classList.remove("hidden");
    detailCard.replaceChildren(
      el("h2", { text: `#${d.id}: ${d.reason}` }),
      el("p", { text: d.detail }),
      el("p", { class: "mono", text: d.topic || "" }),
      el("pre", { class: "mono", style: "white-space:pre-wrap", text: d.payload_preview }),
    );
  }

  async function replay() {
    const body = reason ? { reason } : { ids: [...listCard.querySelectorAll("tr[data-dead-letter]")].map((tr) => Number(tr.dataset.deadLetter)) };
    try {
      const result = await withToken(() => api("/api/dead-letters/replay", { method: "POST", body }));
      if (result) toast(`Replayed ${result.replayed} (${result.readings} readings); ${result.failed.length} still refused`);
    } catch (err) {
      toast(`Replay failed: ${err.message}`);
    }
    load();
  }

  async function purge() {
    if (!confirm(reason ? `Delete every dead letter for ${reason}?` : "Delete every dead letter?")) return;
    try {
      const result = await withToken(() => api("/api/dead-letters/purge", { method: "POST", body: reason ? { reason } : {} }));
      if (result) toast(`Purged ${result.purged}`);
    } catch (err) {
      toast(`Purge failed: ${err.message}`);
    }
    load();
  }

  await load();
  return null;
}

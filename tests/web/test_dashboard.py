"""The dashboard as a person sees it (issue #18), in Debian's Chromium through Playwright.

One real `hub run --simulate` (two air nodes and the demo buggy, live) on a private Mosquitto.
Drive sessions come from the real pipeline too: `hub simulate` replays two more buggies' runs
from a few minutes ago, and the hub closes them on its clock. Screenshots of every page, at
1400x1000 and 390x844, light and dark, land in test-artifacts/web/.
"""

from __future__ import annotations

import itertools
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.bus import hub_json
from hub.derive.comfort import dew_point
from hub.derive.session import Session
from hub.model import Reading
from hub.sources.simulate import simulated_vehicle
from hub.store.sessions import SessionStore
from tests.support.hubproc import REPO, wait_for
from tests.web.conftest import (
    ARTIFACTS,
    TEST_RULE,
    WebHub,
    run_simulate,
    start_web_hub,
    stop_web_hub,
)

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]

DESKTOP = {"width": 1400, "height": 1000}
PHONE = {"width": 390, "height": 844}
REPLAYED = ("buggy-1", "buggy-2")  # `hub simulate --buggies 2` names them so
MOTOR_RULE = {
    "id": "test_motor_hot",
    "metric": "motor_temperature",
    "comparison": ">",
    "threshold": 150,
    "clear": 140,
    "for": "0s",
    "severity": "warning",
    "message": "{device}: motor at {value:.0f} °C (test rule)",
}


@dataclass
class Demo:
    web: WebHub
    started: float  # time.monotonic() just before `hub run` started


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`hub run --simulate`, plus finished drive sessions of two replayed buggies."""
    rc = {name: simulated_vehicle(name).model_dump(mode="json") for name in REPLAYED}
    started = time.monotonic()
    web = start_web_hub(
        tmp_path_factory.mktemp("demo"),
        {
            "simulate": {"enabled": True, "airq_nodes": 2, "buggies": 1, "seed": 18},
            "alerts": {"rules": [TEST_RULE, MOTOR_RULE]},
            "derive": {"rc": rc},
            "store": {"rollup_interval": "2s"},  # the clock that closes sessions ticks often
        },
    )
    try:
        yield Demo(web, started)
    finally:
        stop_web_hub(web)


@pytest.fixture(scope="module")
def sessions(demo: Demo) -> list[dict[str, Any]]:
    """Two buggies' runs, 45 s each, replayed from 4 minutes ago: the hub's session tracker
    records them once its clock sees them idle (the demo buggy drives on meanwhile).

    The tracker's clock tick compares the wall clock with the readings' times, so a tick that
    falls while the replay is still arriving may cut a run in two: the tests take the longest."""
    run_simulate(
        demo.web.broker, "--nodes", "0", "--buggies", "2", "--rounds", "450", "--seed", "4",
        "--start", str(time.time() - 240),
    )  # fmt: skip

    def recorded() -> list[dict[str, Any]]:
        found = demo.web.http.get("/api/sessions").json()
        return found if {s["vehicle"] for s in found} >= set(REPLAYED) else []

    return list(wait_for(recorded, 60, interval=0.5, what="both replayed sessions recorded"))


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A light desktop browser context; fails the test on any page error."""
    ctx = browser.new_context(viewport=DESKTOP, color_scheme="light", accept_downloads=True)
    errors: list[str] = []
    ctx.on("weberror", lambda error: errors.append(str(error.error)))
    yield ctx
    ctx.close()
    assert not errors, errors


def open_page(page: Any, base: str, route: str) -> None:
    page.goto(f"{base}/#/{route}")
    page.wait_for_selector("#view[data-ready]", timeout=15_000)


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def publish(web: WebHub, device: str, metric: str, value: float) -> None:
    publisher = web.publisher(f"dash-{metric}-{time.monotonic_ns()}")
    publisher.publish(
        f"hub/readings/{device}",
        hub_json.encode([Reading(device, metric, value, time.time_ns() // 1_000_000)]),
    )
    publisher.flush()
    publisher.close()


def tile(page: Any, metric: str) -> str:
    return str(page.locator(f'.kpi [data-metric="{metric}"]').inner_text())


def number(text: str) -> float | None:
    cleaned = text.replace(",", "").strip()
    return float(cleaned) if re.fullmatch(r"-?\d+(\.\d+)?", cleaned) else None


# What the y-axes drew: uPlot's tick values and the label texts it put on the canvas, each
# label's width in the axis font, and where it starts (the label's right edge sits at the
# plot's left edge minus tick and gap; left of 0 it is cut off).
AXES = """() => [...document.querySelectorAll('.chart')].filter(c => c.uplot).map(c => {
  const u = c.uplot, axis = u.axes[1], ctx = u.ctx, ratio = window.devicePixelRatio || 1;
  ctx.save();
  ctx.font = axis.font[0];
  const widths = (axis._values || []).map(v => ctx.measureText(String(v)).width / ratio);
  ctx.restore();
  const x = u.axes[0];
  ctx.save();
  ctx.font = x.font[0];
  const spans = (x._values || []).map((v, i) => {
    const w = ctx.measureText(String(v)).width / ratio;
    const at = u.bbox.left / ratio + u.valToPos(x._splits[i], 'x');
    return [at - w / 2, at + w / 2];
  });
  ctx.restore();
  return {
    chart: c.dataset.chart, splits: axis._splits || [], labels: axis._values || [],
    left: widths.map(w => axis._pos - axis.ticks.size - axis.gap - w),
    max: u.scales.y.max, time: x._values || [], spans, width: u.width,
  };
})"""


def label_value(label: str) -> float:
    """'20k' -> 20000, '1.5M' -> 1500000, '12,000' -> 12000, '3.25' -> 3.25."""
    return label_reading(label)[0]


def label_reading(label: str) -> tuple[float, float]:
    """The value a label says, and half its last digit's step (what rounding may hide)."""
    match = re.fullmatch(r"(-?[\d,]*)(?:\.(\d+))?([kM]?)", label.replace("\u2212", "-"))
    assert match and match.group(1).strip("-,"), f"axis label {label!r} is not a number"
    scale = {"": 1, "k": 1e3, "M": 1e6}[match.group(3)]
    decimals = match.group(2) or ""
    value = float(match.group(1).replace(",", "") + (f".{decimals}" if decimals else ""))
    return value * scale, 0.5 * 10 ** -len(decimals) * scale


def check_axes(page: Any, where: str) -> int:
    checked = 0
    for axis in page.evaluate(AXES):
        assert axis["labels"], f"{where} {axis['chart']}: the y-axis has no labels"
        for split, label, left in zip(axis["splits"], axis["labels"], axis["left"], strict=True):
            # The label says its tick's value: exactly, or rounded to a digit it shows that
            # the other ticks' steps do not need (5.25 read '5.3')...
            said, slack = label_reading(label)
            step = min((b - a for a, b in itertools.pairwise(axis["splits"])), default=1.0)
            assert abs(said - split) <= min(slack, abs(step) / 20) + 1e-9, (
                f"{where} {axis['chart']}: tick {split} labelled {label!r}"
            )
            # ...and all of it is on the canvas (the RPM axis read '0,000' for '20,000').
            assert left >= 0, f"{where} {axis['chart']}: label {label!r} cut by {-left:.1f} px"
            checked += 1
        # Time labels neither overlap (the phone showed '12/5/26 9:02am9:03am') nor leave
        # the canvas.
        spans = [s for s, text in zip(axis["spans"], axis["time"], strict=True) if text]
        assert spans, f"{where} {axis['chart']}: the time axis has no labels"
        for (_, right), (left, _) in itertools.pairwise(spans):
            assert right <= left, f"{where} {axis['chart']}: time labels overlap {axis['time']}"
        assert spans[0][0] >= 0 and spans[-1][1] <= axis["width"], (
            f"{where} {axis['chart']}: time labels {axis['time']} leave the chart"
        )
    return checked


def test_dew_point_shows_a_number_soon_after_start(context: Any, demo: Demo) -> None:
    page = context.new_page()
    open_page(page, demo.web.base, "air/airq-1/1h")
    wait_for(
        lambda: (
            number(tile(page, "temperature")) is not None
            and number(tile(page, "humidity")) is not None
        ),
        60 - (time.monotonic() - demo.started),
        interval=0.25,
        what="temperature and humidity tiles",
    )
    paired = time.monotonic()
    # The hub derives the dew point from the first temperature + humidity pair, not a
    # minute later; the tile shows it within the 60 s of start.
    wait_for(
        lambda: number(tile(page, "dew_point")) is not None,
        max(1.0, min(10.0, 60 - (paired - demo.started))),
        interval=0.25,
        what="a dew point number",
    )
    assert time.monotonic() - demo.started < 60
    t, rh, td = (number(tile(page, m)) for m in ("temperature", "humidity", "dew_point"))
    assert t is not None and rh is not None and td is not None
    assert td == pytest.approx(dew_point(t, rh), abs=1.0)


def test_axis_labels_are_whole_tick_values(context: Any, demo: Demo) -> None:
    page = context.new_page()
    open_page(page, demo.web.base, "rc/buggy")
    page.wait_for_function(
        "() => (document.querySelector('[data-chart=\"rpm\"]').uplot.scales.y.max || 0) > 10000",
        timeout=30_000,
    )
    rpm = next(a for a in page.evaluate(AXES) if a["chart"] == "rpm")
    assert any(label.endswith("k") for label in rpm["labels"]), rpm["labels"]  # compact: 20k
    checked = check_axes(page, "rc")
    for phone_width in (PHONE["width"],):
        page.set_viewport_size({"width": phone_width, "height": PHONE["height"]})
        page.wait_for_timeout(300)
        checked += check_axes(page, "rc phone")
    page.set_viewport_size(DESKTOP)
    open_page(page, demo.web.base, "air/airq-1/1h")
    page.wait_for_function(
        "() => Number(document.querySelector('[data-chart=\"co2\"]').dataset.points) > 0"
    )
    checked += check_axes(page, "air")
    assert checked >= 30


def test_comfort_axis_tops_out_at_100(context: Any, demo: Demo) -> None:
    page = context.new_page()
    open_page(page, demo.web.base, "air/airq-1/1h")
    page.wait_for_function(
        "() => Number(document.querySelector('[data-chart=\"comfort_score\"]').dataset.points) > 0",
        timeout=30_000,
    )
    (comfort,) = [a for a in page.evaluate(AXES) if a["chart"] == "comfort_score"]
    assert comfort["max"] <= 100
    assert max(label_value(label) for label in comfort["labels"]) <= 100
    # Early on there is one comfort score: its time axis is a minute around it, not the
    # years uPlot spread a single point over ('Jun 2027 ... Jun 2029').
    lo, hi, points = page.locator('[data-chart="comfort_score"]').evaluate(
        "c => [c.uplot.scales.x.min, c.uplot.scales.x.max, c.uplot.data[0]]"
    )
    assert 0 < hi - lo <= 3600
    assert all(lo <= t <= hi for t in points[-1:])


def test_legends_show_the_latest_values_without_hovering(context: Any, demo: Demo) -> None:
    page = context.new_page()
    open_page(page, demo.web.base, "rc/buggy")
    page.mouse.move(1, 1)  # over the header, not a plot
    page.wait_for_function(
        "() => Number(document.querySelector('[data-chart=\"pack_voltage\"]').dataset.points) > 5"
    )
    page.wait_for_timeout(500)
    legends = page.evaluate(
        """() => [...document.querySelectorAll('.chart')].map(c => ({
          chart: c.dataset.chart,
          values: [...c.querySelectorAll('.u-legend .u-series')].map(r => r.querySelector('.u-value').textContent),
          latest: c.uplot.data.slice(1).map(col => { for (let i = col.length - 1; i >= 0; i--) if (col[i] !== null) return col[i]; return null; }),
        }))"""
    )
    assert len(legends) == 5
    for legend in legends:
        for text, value in zip(legend["values"][1:], legend["latest"], strict=True):
            assert value is not None, legend
            assert text not in ("--", "–"), legend
            shown = number(text.split(" ")[0])
            assert shown == pytest.approx(value, rel=0.01, abs=0.01), legend
    # Hovering shows the value under the cursor, leaving brings the latest back.
    box = page.locator('[data-chart="pack_voltage"] .u-over').bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + box["height"] / 2)
    page.mouse.move(1, 1)
    value = page.locator('[data-chart="pack_voltage"] .u-legend .u-series').nth(1)
    assert value.locator(".u-value").inner_text() not in ("--", "–")


def test_a_device_without_availability_is_not_shown_offline(context: Any, demo: Demo) -> None:
    page = context.new_page()
    open_page(page, demo.web.base, "overview")
    page.wait_for_selector('body[data-live="on"]', timeout=10_000)
    buggy = page.locator('#devices article[data-device="buggy"] .status')
    assert buggy.get_attribute("data-status") == "unknown"
    assert buggy.inner_text().strip() == "no availability topic"
    node = page.locator('#devices article[data-device="airq-1"] .status')
    assert node.get_attribute("data-status") == "online"
    colours = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#devices .status')].map(s =>
             [s.dataset.status, getComputedStyle(s.querySelector('.dot')).backgroundColor]))"""
    )
    # A node that says it went offline turns red, live; the buggy's hollow ring is not that.
    publisher = demo.web.publisher(f"dash-lwt-{time.monotonic_ns()}")
    publisher.publish("airq-2/status", b"offline", retain=True)
    publisher.flush()
    try:
        page.wait_for_selector(
            '#devices article[data-device="airq-2"] .status[data-status="offline"]', timeout=5_000
        )
        offline = page.evaluate(
            """() => getComputedStyle(document.querySelector(
                 '#devices article[data-device="airq-2"] .status .dot')).backgroundColor"""
        )
        assert offline != colours["unknown"]
        assert colours["unknown"] == "rgba(0, 0, 0, 0)"  # hollow: nothing announced
        shot(page, "overview-availability-light-desktop")
    finally:
        publisher.publish("airq-2/status", b"online", retain=True)
        publisher.flush()
        publisher.close()


def export_cli(demo: Demo, session_id: str, fmt: str) -> bytes:
    return export_cli_db(demo.web.hub.db_path, session_id, fmt)


def export_cli_db(db: Path, session_id: str, fmt: str) -> bytes:
    """What `hub sessions export` writes to stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    out = subprocess.run(
        [sys.executable, "-m", "hub", "sessions", "--db", str(db), "export", session_id,
         "--format", fmt],
        env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout


def test_sessions_are_listed_opened_and_downloaded(
    context: Any, demo: Demo, sessions: list[dict[str, Any]]
) -> None:
    page = context.new_page()
    open_page(page, demo.web.base, "rc/buggy")
    rows = page.locator("#sessions tbody tr[data-session]")
    assert rows.count() >= 2
    first = max((s for s in sessions if s["vehicle"] == "buggy-1"), key=lambda s: s["duration_s"])
    row = page.locator(f'#sessions tr[data-session="{first["id"]}"]')
    cells = {
        c["col"]: c["text"]
        for c in row.locator("td").evaluate_all(
            "tds => tds.map(td => ({col: td.dataset.col, text: td.textContent}))"
        )
    }
    for column in ("Distance", "Top speed", "Used", "Energy", "Min cell"):
        assert number(cells[column].split(" ")[0]) is not None, cells
    assert first["distance_km"] > 0 and first["energy_wh"] > 0
    assert cells["Distance"] == f"{first['distance_km']:.2f} km"
    assert cells["Used"] == f"{first['consumed_mah']:.0f} mAh"
    assert re.fullmatch(r"\d+ / \d+ °C", cells["ESC / motor peak"]), cells
    assert cells["Alerts"] == "none"
    shot(page, "rc-sessions-light-desktop")

    # Each format downloads the same bytes as `hub sessions export`.
    for fmt in ("csv", "json"):
        with page.expect_download() as info:
            row.locator(f'a[data-format="{fmt}"]').click()
        download = info.value
        suffix = "csv" if fmt == "csv" else "jsonl"
        assert download.suggested_filename == f"{first['id']}.{suffix}"
        body = Path(download.path()).read_bytes()
        assert body == export_cli(demo, first["id"], fmt)
        assert body.count(b"\n") > 450  # a 45 s run at 10 frames/s, many metrics a frame
    assert page.evaluate("location.hash") == "#/rc/buggy"  # a download does not open the row
    served = demo.web.http.get(f"/api/sessions/{first['id']}/export", params={"format": "csv"})
    assert served.headers["content-type"] == "text/csv; charset=utf-8"
    assert served.content.startswith(b"timestamp_ms,device,metric,value,unit,source,tags\n")

    # A click on the row opens the session's own page and charts.
    row.locator('td[data-col="Length"]').click()
    page.wait_for_function(f"() => location.hash === '#/rc/session/{first['id']}'")
    page.wait_for_selector("#view[data-ready]", timeout=15_000)
    for chart in ("pack_voltage", "current", "esc_temperature", "rpm", "speed"):
        page.wait_for_function(
            f"() => Number(document.querySelector('[data-chart=\"{chart}\"]').dataset.points) > 20"
        )
    assert "No alerts." in page.locator("#session-alerts").inner_text()
    # The charts span the session, not a padded minute (the run is 40 s long).
    lo, hi = page.locator('[data-chart="pack_voltage"]').evaluate(
        "c => [c.uplot.scales.x.min, c.uplot.scales.x.max]"
    )
    assert abs(lo - first["start_ms"] / 1000) < 2 and abs(hi - first["end_ms"] / 1000) < 2
    check_axes(page, "session")
    shot(page, "rc-session-light-desktop")


PAGES = ("overview", "air", "rc", "rc-session", "alerts", "dead-letters")


def test_every_page_at_both_sizes_in_both_themes(
    browser: Any, demo: Demo, sessions: list[dict[str, Any]]
) -> None:
    session = max((s for s in sessions if s["vehicle"] == "buggy-1"), key=lambda s: s["duration_s"])
    routes = {
        "overview": "overview",
        "air": "air/airq-1/1h",
        "rc": "rc/buggy",
        "rc-session": f"rc/session/{session['id']}",
        "alerts": "alerts",
        "dead-letters": "dead-letters",
    }
    # What a running hub has seen by now: an alert that fired and cleared, a refused message.
    web = demo.web
    publish(web, "airq-2", "co2", 6500.0)  # the test rule fires; the next real CO2 clears it
    publisher = web.publisher(f"dash-bad-{time.monotonic_ns()}")
    publisher.publish("hub/readings/bench-logger", b"{not json")
    publisher.flush()
    publisher.close()
    wait_for(
        lambda: (
            any(
                a["device"] == "airq-2" and a["state"] == "resolved"
                for a in web.http.get("/api/alerts/history").json()
            )
            and web.http.get("/api/dead-letters").json()
        ),
        30,
        interval=0.5,
        what="a resolved alert and a dead letter",
    )
    written = []
    for scheme in ("light", "dark"):
        for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            ctx = browser.new_context(viewport=viewport, color_scheme=scheme)
            # Dead letters hold raw payloads: they need the token even where reading is public.
            # (only on the hub's origin: about:blank may not touch localStorage)
            ctx.add_init_script(
                f"if (location.protocol.startsWith('http'))"
                f" localStorage.setItem('hub.token', {web.token!r})"
            )
            errors: list[str] = []
            ctx.on("weberror", lambda error, errors=errors: errors.append(str(error.error)))
            page = ctx.new_page()
            for name in PAGES:
                open_page(page, demo.web.base, routes[name])
                if page.locator(".chart").count():
                    page.wait_for_function(
                        "() => [...document.querySelectorAll('.chart')]"
                        ".every(c => Number(c.dataset.points) > 0)",
                        timeout=20_000,
                    )
                    check_axes(page, f"{name} {scheme} {size}")
                page.wait_for_timeout(300)
                dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
                assert (dark == "rgb(15, 19, 24)") == (scheme == "dark")
                # Nothing sticks out sideways: a phone scrolls down, never across the page.
                overflow = page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert overflow <= 0, f"{name} {scheme} {size}: {overflow} px wider than the screen"
                # No tile's text runs over its edge ('connected' did, in the hub's tile).
                spills = page.evaluate(
                    "() => [...document.querySelectorAll('.kpi')]"
                    ".filter(k => k.scrollWidth > k.clientWidth + 1).map(k => k.textContent)"
                )
                assert not spills, f"{name} {scheme} {size}: text runs out of {spills}"
                written.append(shot(page, f"page-{name}-{scheme}-{size}"))
            ctx.close()
            assert not errors, errors
    assert len(written) == len(PAGES) * 4


def test_a_session_lists_the_alerts_during_it(
    context: Any, demo: Demo, sessions: list[dict[str, Any]]
) -> None:
    # A run of buggy-2 that is going on now, written by the store's own session code; a
    # real alert of the hub fires during it.
    now = time.time_ns() // 1_000_000
    conn = sqlite3.connect(demo.web.hub.db_path, timeout=10)
    try:
        SessionStore(conn).save(
            Session("buggy-2-alerted", "buggy-2", "buggy-2", now - 20_000, now + 20_000, 30.0)
        )
    finally:
        conn.close()
    publish(demo.web, "buggy-2", "motor_temperature", 180.0)
    wait_for(
        lambda: demo.web.http.get("/api/sessions/buggy-2-alerted").json()["alerts"],
        10,
        what="the alert in the session",
    )
    page = context.new_page()
    open_page(page, demo.web.base, "rc/buggy")
    row = page.locator('#sessions tr[data-session="buggy-2-alerted"]')
    assert row.locator('td[data-col="Alerts"]').inner_text() == "1"
    others = page.locator('#sessions tr[data-session] td[data-col="Alerts"]', has_text="none")
    assert others.count() >= 2  # the replayed runs, minutes ago, had none
    open_page(page, demo.web.base, "rc/session/buggy-2-alerted")
    assert "buggy-2: motor at 180 °C (test rule)" in page.locator("#session-alerts").inner_text()
    publish(demo.web, "buggy-2", "motor_temperature", 30.0)  # resolve it again


def test_downloads_work_where_reading_needs_the_token(browser: Any, tmp_path: Path) -> None:
    # A plain link carries no token; on such a hub the page fetches the file with it.
    web = start_web_hub(tmp_path, {"web": {"public_read": False}})
    try:
        start = time.time_ns() // 1_000_000
        for value in (11.9, 11.8, 11.7):
            publish(web, "bench-car", "pack_voltage", value)
        web.http.headers["Authorization"] = f"Bearer {web.token}"
        wait_for(
            lambda: web.http.get("/api/latest", params={"device": "bench-car"}).json(),
            10,
            what="the readings stored",
        )
        conn = sqlite3.connect(web.hub.db_path, timeout=10)
        try:
            end = time.time_ns() // 1_000_000
            SessionStore(conn).save(Session("bench-car-run", "bench-car", "bench-car", start, end))
        finally:
            conn.close()
        ctx = browser.new_context(viewport=DESKTOP, accept_downloads=True)
        ctx.add_init_script(f"localStorage.setItem('hub.token', {web.token!r})")
        page = ctx.new_page()
        open_page(page, web.base, "rc/session/bench-car-run")
        with page.expect_download() as info:
            page.locator('a[data-format="csv"]').click()
        body = Path(info.value.path()).read_bytes()
        assert info.value.suggested_filename == "bench-car-run.csv"
        assert body == export_cli_db(web.hub.db_path, "bench-car-run", "csv")
        assert body.count(b",pack_voltage,") == 3
        plain = httpx.get(f"{web.base}/api/sessions/bench-car-run/export", timeout=10)
        assert plain.status_code == 401  # what the link alone would have fetched
        ctx.close()
    finally:
        stop_web_hub(web)

"""Every Flux query in dashboards/grafana names only what the hub writes.

Measurements, fields and tags are checked against hub.model.CATALOG and against lines the
line-protocol writer actually produces, so a renamed metric or tag breaks this test instead
of leaving an empty Grafana panel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.model import CATALOG
from hub.store.influx import FIXED_TAGS, LineWriter, SeriesKey

GRAFANA = Path(__file__).resolve().parents[2] / "dashboards" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Tags readings carry themselves: ESPHome object ids and the RC derivations' vehicle.
READING_TAGS = ("sensor", "vehicle")
FLUX_COLUMNS = {"_time", "_value", "_field", "_measurement", "_start", "_stop"}

_MEASUREMENT = re.compile(r'r(?:\._measurement|\["_measurement"\])\s*==\s*"([^"]+)"')
_FIELD = re.compile(r'r(?:\._field|\["_field"\])\s*==\s*"([^"]+)"')
_RECORD_TAG = re.compile(r'\br(?:\.([A-Za-z_][A-Za-z0-9_]*)|\["([^"]+)"\])')
_TAG_ARG = re.compile(r'\btag:\s*"([^"]+)"')
_COLUMNS = re.compile(r"\bcolumns:\s*\[([^\]]*)\]")
_LABEL = re.compile(r"__field\.labels\.([A-Za-z_][A-Za-z0-9_]*)")


def written(metric: str) -> tuple[str, set[str], str]:
    """(measurement, tag keys, field) of a line the forwarder writes for `metric`."""
    writer = LineWriter("ms", {"dev": "kitchen"})
    key = SeriesKey("dev", metric, {t: "x" for t in READING_TAGS}, "mqtt")
    line = writer.line(writer.prefix(key), 1_763_800_000_000, 1.5)
    series, field_part, _ = line.split(" ")
    measurement, *tags = series.split(",")
    return measurement, {t.split("=")[0] for t in tags}, field_part.split("=")[0]


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = [
        (f"panel {p.get('title')!r}", t["query"])
        for p in dashboard["panels"]
        for t in p.get("targets", [])
    ]
    found += [
        (f"variable {v['name']!r}", v["query"])
        for v in dashboard.get("templating", {}).get("list", [])
        if v.get("type") == "query"
    ]
    return found


def problems(query: str) -> list[str]:
    out = []
    tags_written = set(FIXED_TAGS) | set(READING_TAGS)
    if "v.defaultBucket" not in query:
        out.append("does not read the datasource's bucket (v.defaultBucket)")
    measurements = set(_MEASUREMENT.findall(query))
    if len(measurements) != 1:
        out.append(f"names {len(measurements)} measurements, expected one: {measurements}")
    for measurement in measurements:
        families = {spec.family for spec in CATALOG.values()}
        if measurement not in families:
            out.append(f"measurement {measurement!r} is not a catalog family {sorted(families)}")
    for field in _FIELD.findall(query):
        if field not in CATALOG:
            out.append(f"field {field!r} is not a metric in hub.model.CATALOG")
            continue
        measurement, tags, written_field = written(field)
        if written_field != field or measurement not in measurements:
            out.append(f"the writer puts {field!r} under {measurement!r}, not {measurements}")
        tags_written |= tags
    names = {a or b for a, b in _RECORD_TAG.findall(query)}
    names |= set(_TAG_ARG.findall(query))
    for group in _COLUMNS.findall(query):
        names |= set(re.findall(r'"([^"]+)"', group))
    for name in sorted(names - FLUX_COLUMNS):
        if name not in tags_written:
            out.append(f"tag {name!r} is not written (tags: {sorted(tags_written)})")
    return out


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_query_matches_what_the_hub_writes(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    found = queries(dashboard)
    assert len(found) >= 5
    report = [f"{where}: {p}" for where, q in found for p in problems(q)]
    assert report == []
    for panel in dashboard["panels"]:
        display = panel["fieldConfig"]["defaults"].get("displayName", "")
        for label in _LABEL.findall(display):
            assert label in set(FIXED_TAGS) | set(READING_TAGS) | FLUX_COLUMNS, (path, label)
        assert panel["datasource"]["uid"] == "hub-influxdb"


def test_dashboards_cover_the_issue_panels() -> None:
    fields: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        fields[path.stem] = {
            f for _, q in queries(json.loads(path.read_text())) for f in _FIELD.findall(q)
        }
    assert {"aqi_us", "pm2_5", "pm10", "co2", "voc_index", "comfort_score"} <= fields["air-quality"]
    assert {
        "pack_voltage", "cell_voltage_avg", "current", "esc_temperature", "motor_temperature",
        "rpm", "speed", "consumed_mah",
    } <= fields["rc-session"]  # fmt: skip


def test_checker_catches_drift() -> None:
    drifted = (
        "from(bucket: v.defaultBucket) |> range(start: -1h)\n"
        '  |> filter(fn: (r) => r._measurement == "air" and r._field == "pm25")\n'
        '  |> filter(fn: (r) => r._measurement == "air" and r._field == "pack_voltage")\n'
        '  |> filter(fn: (r) => r.room == "kitchen")\n'
        '  |> group(columns: ["node"])'
    )
    found = problems(drifted)
    assert any("'pm25' is not a metric" in p for p in found)
    assert any("puts 'pack_voltage' under 'rc'" in p for p in found)
    assert any("tag 'room'" in p for p in found) and any("tag 'node'" in p for p in found)


def test_provisioning_points_at_the_dashboards_datasource() -> None:
    datasource = yaml.safe_load((GRAFANA / "provisioning/datasources/influxdb.yaml").read_text())
    (ds,) = datasource["datasources"]
    assert ds["uid"] == "hub-influxdb" and ds["jsonData"]["version"] == "Flux"
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/hub.yaml").read_text())
    assert provider["providers"][0]["type"] == "file"

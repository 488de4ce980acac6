"""What a user sees through an InfluxDB outage (issue #21), printed, not asserted.

A real `hub run` (tests/support/hubproc.py), a real Mosquitto and a real VictoriaMetrics;
readings at `--rate` per second; VictoriaMetrics is SIGKILLed for `--outage` seconds with a
small outbox (`--max-outbox`, default 2 MiB), then started again on the same port. Prints:

- how long after the outbox filled `hub status` said outbox_full, and the refused count then;
- every log line the hub wrote during the outage (and how many);
- time from the server answering again to the outbox drained;
- `hub influx backfill`: refused, recovered, time, and VictoriaMetrics' point count against the
  store's (duplicates would make it larger).

    .venv/bin/python bench/influx_outage.py [--rate 2000] [--outage 60] [--max-outbox 2MiB]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from click.testing import CliRunner

from hub.bus import hub_json
from hub.cli.influx import influx
from hub.config.base import parse_bytes
from hub.model import Reading
from tests.influx.victoria import VictoriaMetrics
from tests.support.hubproc import HubProcess, Publisher, wait_for
from tests.support.mosquitto import Mosquitto

DEVICES = ("airq-1", "airq-2", "airq-3", "airq-4")
METRICS = ("pm2_5", "pm10", "co2", "temperature", "humidity")


def publish(mosquitto: Mosquitto, rate: float, stop: threading.Event, counter: list[int]) -> None:
    """`rate` readings/s: every tick, one message of five readings per device, in time order."""
    publisher = Publisher(mosquitto.host, mosquitto.port, client_id="bench-outage")
    per_tick = len(DEVICES) * len(METRICS)
    tick = per_tick / rate
    ts = int(time.time() * 1000)
    next_at = time.monotonic()
    try:
        while not stop.is_set():
            ts = max(ts + 1, int(time.time() * 1000))
            for n, device in enumerate(DEVICES):
                items = [Reading(device, m, float((ts // 7 + n) % 500), ts) for m in METRICS]
                publisher.publish(f"hub/readings/{device}", hub_json.encode(items, source="bench"))
            counter[0] += per_tick
            next_at += tick
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        publisher.flush(60)
    finally:
        publisher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--max-outbox", default="2MiB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-influx-outage-") as tmp:
        work = Path(tmp)
        with Mosquitto(work / "broker") as mosquitto, VictoriaMetrics(work / "vm") as vm:
            config = {
                "influx": {
                    "enabled": True, "url": vm.url, "org": "home", "bucket": "hub",
                    "token": "t", "max_outbox": args.max_outbox, "min_free_disk": 0,
                },
                "log": {"level": "info"},
            }  # fmt: skip
            hub = HubProcess(work, mosquitto.url, config).start()

            def influx_status() -> dict:
                return dict(hub.status().get("influx") or {})

            stop, counter = threading.Event(), [0]
            thread = threading.Thread(target=publish, args=(mosquitto, args.rate, stop, counter))
            thread.start()
            try:
                wait_for(lambda: influx_status().get("delivered", 0) > 1000, 30, what="flow")
                assert vm.proc is not None
                vm.proc.kill()
                vm.proc.wait()
                killed = time.monotonic()
                killed_ms = int(time.time() * 1000)
                log_from = len(hub.log().splitlines())
                print(
                    f"VictoriaMetrics SIGKILLed; outage of {args.outage:.0f} s at {args.rate:.0f} readings/s, max_outbox {args.max_outbox} ({parse_bytes(args.max_outbox)} B)"
                )
                refused_at = None
                shown = None
                while time.monotonic() - killed < args.outage:
                    rows = hub.query("SELECT refused FROM outbox_control WHERE id = 1")
                    if refused_at is None and rows and rows[0][0] > 0:
                        refused_at = time.monotonic()
                    section = influx_status()
                    if refused_at and shown is None and section.get("state") == "outbox_full":
                        shown = time.monotonic() - refused_at
                        print(
                            f"  status said outbox_full {shown:.2f} s after the first refusal "
                            f"(refused {section['refused']}, backlog {section['backlog']}, "
                            f"health {section['health']['status']}: {section['health']['reason']})"
                        )
                    time.sleep(0.05)
                section = influx_status()
                print(
                    f"  at the end of the outage: state {section['state']}, backlog "
                    f"{section['backlog']}, refused {section['refused']}, retries "
                    f"{section['retries']}, probes {section['probes']}"
                )
                lines = hub.log().splitlines()[log_from:]
                print(f"  {len(lines)} log lines during the {args.outage:.0f} s outage:")
                for line in lines:
                    print(f"    {line[:160]}")
                vm.start()
                back = time.monotonic()
                # Drained: the backlog the outage left is gone (live readings keep flowing).
                wait_for(lambda: influx_status().get("state") not in ("retrying", "outbox_full")
                         and influx_status().get("backlog", 10**9) < args.rate, 120, 0.05,
                         what="drained")  # fmt: skip
                print(f"  server back -> outbox drained: {time.monotonic() - back:.2f} s")
            finally:
                stop.set()
                thread.join(120)
            wait_for(lambda: influx_status().get("backlog") == 0, 60, what="idle")
            refused = hub.query("SELECT refused FROM outbox_control WHERE id = 1")[0][0]
            started = time.monotonic()
            result = CliRunner().invoke(influx, ["backfill", "-c", str(hub.config_path)])
            wait_for(lambda: influx_status().get("backlog") == 0, 120, what="backfill sent")
            took = time.monotonic() - started
            print(
                f"  backfill ({took:.1f} s, until sent): {result.output.strip().splitlines()[-1]}"
            )
            again = CliRunner().invoke(influx, ["backfill", "-c", str(hub.config_path)])
            print(f"  backfill again: {again.output.strip()}")
            stored = hub.sample_count()
            time.sleep(2)
            in_vm = vm.sample_count()
            print(
                f"  refused {refused}; published {counter[0]} readings, store holds {stored}, "
                f"VictoriaMetrics holds {in_vm} ({in_vm - stored:+d})"
            )
            if in_vm != stored:
                # Which readings differ, relative to the SIGKILL: VictoriaMetrics keeps the
                # newest points in memory for about a second, so a SIGKILL loses points it had
                # already acknowledged (answered 204) - the outbox cannot know.
                stamps = {t for series in vm.export() for t in series["timestamps"]}
                rows = hub.query("SELECT DISTINCT ts FROM samples")
                missing = sorted(t for (t,) in rows if t not in stamps)
                if missing:
                    print(
                        f"  {len(missing)} distinct timestamps missing in VictoriaMetrics, from "
                        f"{(missing[0] - killed_ms) / 1000:+.2f} s to "
                        f"{(missing[-1] - killed_ms) / 1000:+.2f} s around the SIGKILL"
                    )
            status = orjson.loads(
                CliRunner().invoke(influx, ["status", "-c", str(hub.config_path), "--json"]).output
            )
            print(f"  refused still unsent: {status['outbox']['refused_unsent']}")
            hub.stop()


if __name__ == "__main__":
    main()

"""`hub alerts list|history|ack|silence|rules|test`.

Reads go straight to the store. Acknowledge and silence are written as commands that the
running hub's engine applies on its next tick (within `alerts.tick`), so the in-memory state,
Home Assistant and the web dashboard all see them; with no hub running they are applied here.
"""

from __future__ import annotations

import getpass
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hub.alerts.engine import AlertEngine
from hub.alerts.packs import effective_rules
from hub.alerts.store import Alert, AlertStore
from hub.cli.common import config_option, load_or_exit
from hub.config import HubConfig
from hub.config.base import parse_duration

console = Console()


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _store(config: HubConfig) -> AlertStore:
    url = config.store.url
    if url and url.startswith(("postgresql://", "postgres://")):
        from hub.alerts.pg_store import open_cli_store
        from hub.store.postgres import redact

        try:
            return open_cli_store(url)
        except Exception as exc:
            console.print(f"Cannot reach the store at {redact(url)}: {exc}")
            sys.exit(1)
    path = config.store_path
    if not path.exists():
        console.print(f"No store at {path} yet: start the hub with 'hub run' first.")
        sys.exit(1)
    return AlertStore(path, background=False)


def _table(alerts: list[Alert], title: str, width: int) -> Table:
    """Two lines an alert, made to fit `width` (80 columns and up): the rule over its message
    (the message wraps), the start date over its time, the severity over the state. Nothing
    is cut to an ellipsis: where room runs out, the device name folds, then the message."""
    now = int(time.time() * 1000)
    rows = []
    for a in alerts:
        notes = []
        if a.silenced(now):
            notes.append(f"silenced until {_when(a.silenced_until_ms)}")
        if a.acknowledged_by:
            notes.append(f"acknowledged by {a.acknowledged_by}")
        value = "-" if a.value is None else f"{a.value:g}" + (f" {a.unit}" if a.unit else "")
        day, clock = _when(a.started_ms).split(" ")
        what = f"[bold]{escape(a.rule)}[/]\n{escape(a.message)}"
        if notes:
            what += f"\n[dim]{escape('; '.join(notes))}[/]"
        rows.append(
            (str(a.id), f"{a.severity}\n{a.state}", a.device, value, f"{day}\n{clock}Z", what)
        )
    # The room the device may take: what the fixed columns and a whole rule name leave.
    rule_width = max(len(a.rule) for a in alerts)
    fixed = sum(max(len(h), *(len(line) for r in rows for line in r[i].split("\n")))
                for i, h in ((0, "id"), (1, "severity"), (3, "value"), (4, "since")))  # fmt: skip
    device_room = max(8, width - fixed - rule_width - 2 * 5)
    table = Table(title=title, box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("device", overflow="fold", max_width=device_room)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("since", no_wrap=True)
    table.add_column("rule / message", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _print(alerts: list[Alert], as_json: bool, title: str) -> None:
    if as_json:
        click.echo(orjson.dumps([a.as_dict() for a in alerts], option=orjson.OPT_INDENT_2))
    elif not alerts:
        click.echo(f"{title}: none")
    else:
        console = Console()  # sized to the terminal (or COLUMNS) now, not at import
        console.print(_table(alerts, title, console.width))


@click.group("alerts")
def alerts() -> None:
    """Alerts: firing, history, acknowledge, silence, and dry-run a rule."""


@alerts.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_cmd(config_path: Path | None, as_json: bool) -> None:
    """Firing alerts."""
    config = load_or_exit(config_path)
    store = _store(config)
    _print(store.load_firing(), as_json, "Firing alerts")
    store.close()


@alerts.command("history")
@config_option
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
@click.option("--device", default=None, help="Only this device.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history(config_path: Path | None, limit: int, device: str | None, as_json: bool) -> None:
    """Alerts newest first, firing and resolved."""
    config = load_or_exit(config_path)
    store = _store(config)
    _print(store.history(limit, device), as_json, "Alert history")
    store.close()


def _hub_running(config: HubConfig) -> bool:
    url = config.store.url
    if url and url.startswith(("postgresql://", "postgres://")):
        from hub.leader import leader_name

        try:  # a leader worker runs the alert engine
            return leader_name(url) is not None
        except Exception:
            return False
    try:
        status = orjson.loads((config.data_dir / "status.json").read_bytes())
        if status.get("state") != "running":
            return False
        os.kill(int(status["pid"]), 0)
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _command(config: HubConfig, command: str, target: str, by: str, until_ms: int | None) -> None:
    store = _store(config)
    now = int(time.time() * 1000)
    command_id = store.add_command(now, command, target, by, until_ms)
    if _hub_running(config):
        deadline = time.monotonic() + max(5.0, config.alerts.tick * 5)
        while time.monotonic() < deadline:
            applied, result = store.command_result(command_id)
            if applied:
                store.close()
                _report(result)
                return
            time.sleep(0.1)
        store.close()
        click.echo("Queued: the running hub has not applied it yet (it will on its next tick).")
        return
    # No hub running: apply it here, against the stored state.
    engine = AlertEngine(effective_rules(config.alerts), store)
    _, result = store.command_result(command_id)
    store.close()
    _report(result)
    del engine


def _report(result: str | None) -> None:
    if result and result.startswith("error"):
        click.echo(result, err=True)
        sys.exit(1)
    click.echo(result or "ok")


@alerts.command("ack")
@config_option
@click.argument("alert_id", type=int)
@click.option("--by", default=None, help="Who acknowledges (default: your user name).")
def ack(config_path: Path | None, alert_id: int, by: str | None) -> None:
    """Acknowledge alert ALERT_ID."""
    config = load_or_exit(config_path)
    _command(config, "ack", str(alert_id), by or getpass.getuser(), None)


@alerts.command("silence")
@config_option
@click.argument("target")
@click.option("--for", "duration", default="1h", show_default=True,
              help="How long: 30m, 2h, 1d; 0 lifts the silence.")  # fmt: skip
@click.option("--by", default=None, help="Who silences (default: your user name).")
def silence(config_path: Path | None, target: str, duration: str, by: str | None) -> None:
    """Silence TARGET (an alert id, or a rule id for every device) for a while."""
    config = load_or_exit(config_path)
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    until = int(time.time() * 1000 + seconds * 1000) if seconds > 0 else 0
    _command(config, "silence", target, by or getpass.getuser(), until)


@alerts.command("rules")
@config_option
def rules(config_path: Path | None) -> None:
    """The effective rules (packs + overrides + yours)."""
    config = load_or_exit(config_path)
    table = Table(title="Alert rules")
    for column in ("id", "kind", "metric", "device", "condition", "for", "severity"):
        table.add_column(column)
    for r in effective_rules(config.alerts):
        if r.kind in ("threshold", "rate"):
            cond = f"{r.comparison} {r.threshold:g} (clear {r.clear if r.clear is not None else r.threshold:g})"
            cond += "/s" if r.kind == "rate" else ""
        elif r.kind == "stale":
            cond = f"no reading for {r.stale_after:g} s"
        else:
            cond = "offline"
        table.add_row(r.id, r.kind, ",".join(r.metric), ",".join(r.device), cond,
                      f"{r.for_s:g} s", r.severity)  # fmt: skip
    console.print(table)


@alerts.command("test")
@config_option
@click.argument("rule_id")
@click.argument("device", required=False)
@click.option("--value", type=float, default=None,
              help="Dry run: what this value would do to the rule (nothing is stored or sent).")  # fmt: skip
@click.option("--for", "duration", default="60s", show_default=True,
              help="How long the test alert fires before it resolves.")  # fmt: skip
@click.option("--device", "device_option", default=None, hidden=True)  # the older spelling
def test(config_path: Path | None, rule_id: str, device: str | None, value: float | None,
         duration: str, device_option: str | None) -> None:  # fmt: skip
    """Fire a TEST alert of RULE_ID on DEVICE through the whole path (Home Assistant entity,
    hub_alert event, notification), resolved after --for; or, with --value, a dry run."""
    config = load_or_exit(config_path)
    device = device or device_option
    if value is not None:
        _dry_run(config, rule_id, value, device or "test-device")
        return
    if not device:
        raise click.UsageError("name the DEVICE to fire the test alert on (or give --value)")
    if rule_id not in {r.id for r in effective_rules(config.alerts)}:
        click.echo(f"no rule with id {rule_id!r}; see 'hub alerts rules'", err=True)
        sys.exit(2)
    if not _hub_running(config):
        click.echo("No hub is running: a test alert goes through the running hub ('hub run').", err=True)  # fmt: skip
        sys.exit(1)
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    until = int(time.time() * 1000 + seconds * 1000)
    _command(config, "test", f"{rule_id}\t{device}", getpass.getuser(), until)
    click.echo(f"It resolves in {seconds:g} s. Watch binary_sensor for {rule_id} on {device} in Home Assistant.")  # fmt: skip


def _dry_run(config: HubConfig, rule_id: str, value: float, device: str) -> None:
    engine = AlertEngine(effective_rules(config.alerts))
    try:
        result = engine.dry_run(rule_id, value, device)
    except KeyError as exc:
        click.echo(f"{exc.args[0]}; see 'hub alerts rules'", err=True)
        sys.exit(2)
    if result["kind"] not in ("threshold", "rate"):
        click.echo(f"{rule_id} is a {result['kind']} rule: it does not look at values.")
        return
    unit = "/s" if result["kind"] == "rate" else ""
    verdict = "FIRES" if result["would_fire"] else ("clears" if result["would_clear"] else "holds (between threshold and clear)")  # fmt: skip
    click.echo(
        f"{rule_id}: {value:g}{unit} {result['comparison']} {result['threshold']:g}{unit}? -> {verdict}"
    )
    if result["would_fire"]:
        delay = f" after holding for {result['for_s']:g} s" if result["for_s"] else ""
        click.echo(f"  would fire ({result['severity']}){delay}: {result['message']}")

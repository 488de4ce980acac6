"""`hub deadletters list|show|replay|purge`: what the hub refused or could not deliver.

Two sources share the `dead_letters` table: `mqtt` (a message ingest could not decode; the
raw payload is kept) and `influx` (points InfluxDB refused for good; the line protocol is
kept). A replay re-decodes an MQTT payload through the same router into the store, or puts
InfluxDB points back in the outbox; either way the letter is marked replayed, not deleted.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from hub.bus import esphome
from hub.bus.mqtt import Message
from hub.bus.reject import Rejected
from hub.bus.router import Router
from hub.cli.common import config_option, load_or_exit, parse_since
from hub.config import HubConfig
from hub.store import outbox
from hub.store.sqlite import Batch, Store, mark_replayed

console = Console()
SOURCES = click.Choice(["mqtt", "influx", "derive"])


def _open(config: HubConfig) -> Store:
    if not config.store_path.exists():
        console.print(f"No store at {config.store_path}: nothing was ever refused.")
        sys.exit(1)
    return Store(config.store_path)


def _select(
    store: Store,
    ids: tuple[int, ...] = (),
    source: str | None = None,
    reason: str | None = None,
    include_replayed: bool = True,
    before_ms: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    return store.find_dead_letters(ids, source, reason, include_replayed, before_ms, limit)


def _fmt_ms(ms: int | None) -> str:
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


@click.group("deadletters")
def deadletters() -> None:
    """Messages (mqtt) and InfluxDB points (influx) the hub refused, with the reason."""


@deadletters.command("list")
@config_option
@click.option("--source", type=SOURCES, default=None, help="Only this source.")
@click.option(
    "--reason", default=None, help="Only this reason (e.g. bad_json, influx_bad_request)."
)
@click.option("--limit", default=50, show_default=True, help="Newest N.")
@click.option("--pending", is_flag=True, help="Hide the ones already replayed.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
def list_cmd(
    config_path: Path | None,
    source: str | None,
    reason: str | None,
    limit: int,
    pending: bool,
    as_json: bool,
) -> None:
    """Dead letters, newest last, with counts per source and reason."""
    store = _open(load_or_exit(config_path))
    try:
        rows = _select(store, (), source, reason, not pending, limit=limit)
        counts = store.dead_letter_summary()
    finally:
        store.close()
    if as_json:
        for row in rows:
            click.echo(orjson.dumps(row).decode())
        return
    if not rows:
        console.print("No dead letters" + (" matching" if source or reason else "") + ".")
        return
    table = Table(
        "id", "received", "source", "topic / target", "reason", "detail", "bytes", "replayed"
    )
    for row in rows:
        table.add_row(
            str(row["id"]), _fmt_ms(row["received_ts"]), row["source"], row["topic"] or "-",
            row["reason"], (row["detail"] or "")[:80], str(row["payload_bytes"] or 0),
            _fmt_ms(row["replayed_ts"]),
        )  # fmt: skip
    console.print(table)
    console.print(
        "Totals: "
        + ", ".join(f"{s}/{r}: {n} ({p} pending)" for s, r, n, p in counts)
        + ". 'hub deadletters show ID' prints one; 'replay' retries; 'purge' deletes."
    )


@deadletters.command("show")
@config_option
@click.argument("letter_id", type=int)
@click.option("--raw", is_flag=True, help="Write only the payload bytes to stdout.")
def show(config_path: Path | None, letter_id: int, raw: bool) -> None:
    """One dead letter: reason, the server's or codec's detail, and the payload."""
    store = _open(load_or_exit(config_path))
    try:
        found = store.dead_letter(letter_id)
    finally:
        store.close()
    if found is None:
        console.print(f"No dead letter {letter_id}.")
        sys.exit(1)
    info, payload = found
    if raw:
        sys.stdout.buffer.write(payload or b"")
        return
    for key, value in info.items():
        shown = _fmt_ms(value) if key in ("received_ts", "replayed_ts") else value
        click.echo(f"{key:>14}: {shown}")
    click.echo(f"{'payload':>14}:")
    if payload is None:
        click.echo("(none)")
        return
    try:
        text = payload.decode()
        click.echo(text if len(text) <= 20000 else text[:20000] + f"\n... ({len(text)} chars)")
    except UnicodeDecodeError:
        click.echo(payload[:4096].hex(" "))


def _replay_mqtt(store: Store, router: Router, letter: dict[str, Any], now_ms: int) -> str:
    found = store.dead_letter(letter["id"])
    if found is None:
        return "gone (purged meanwhile)"
    info, payload = found
    if info["payload_truncated"]:
        return (
            f"not replayable: only the first {len(payload or b'')} of {info['payload_bytes']} "
            "bytes were kept (store.dead_letters.max_payload)"
        )
    message = Message(
        letter["topic"] or "", payload or b"", 0, 0, False, False, letter["received_ts"]
    )
    try:
        decoded = router.decode(message, now_ms)
    except Rejected as exc:
        return f"still rejected ({exc.reason}: {exc.detail})"
    letter_id = letter["id"]
    batch = Batch()
    batch.add(decoded)
    batch.writes.append(lambda conn: mark_replayed(conn, [letter_id], now_ms))
    result = store.commit(batch)  # readings and the mark in one transaction
    return f"replayed: {result.stored} readings stored ({result.duplicates} already there), {result.events} events"


def _replay_influx(store: Store, letter: dict[str, Any], now_ms: int) -> str:
    with store.transaction() as conn:
        queued = outbox.requeue(conn, letter["id"])
        mark_replayed(conn, [letter["id"]], now_ms)
    return f"re-queued {queued} points to the InfluxDB outbox"


@deadletters.command("replay")
@config_option
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "replay_all", is_flag=True, help="Every pending dead letter that matches.")
@click.option("--source", type=SOURCES, default=None, help="Only this source.")
@click.option("--reason", default=None, help="Only this reason.")
@click.option("--again", is_flag=True, help="Also letters replayed before.")
def replay(
    config_path: Path | None,
    ids: tuple[int, ...],
    replay_all: bool,
    source: str | None,
    reason: str | None,
    again: bool,
) -> None:
    """Retry dead letters: MQTT payloads are decoded again (after a fix or a mapping change)
    and stored; InfluxDB points go back into the outbox. Safe beside a running hub."""
    if not ids and not replay_all:
        raise click.UsageError("name the dead letters to replay (IDS...) or pass --all")
    config = load_or_exit(config_path)
    store = _open(config)
    now_ms = time.time_ns() // 1_000_000
    replayed = failed = 0
    try:
        letters = _select(store, ids, source, reason, include_replayed=again or bool(ids))
        router = Router(config)
        for state_topic, _, entity_json in store.load_entities():
            try:
                router.entities[state_topic] = esphome.Entity(**orjson.loads(entity_json))
            except (TypeError, ValueError):
                continue
        influx_off = False
        for letter in letters:
            if letter["source"] == "mqtt":
                outcome = _replay_mqtt(store, router, letter, now_ms)
            elif letter["source"] == outbox.DEAD_LETTER_SOURCE:
                outcome = _replay_influx(store, letter, now_ms)
                influx_off = influx_off or not config.influx.enabled
            else:
                outcome = f"cannot replay source {letter['source']!r}"
            ok = outcome.startswith(("replayed", "re-queued"))
            replayed += ok
            failed += not ok
            click.echo(f"{letter['id']}: {outcome}")
    finally:
        store.close()
    click.echo(f"{replayed} replayed, {failed} not")
    if influx_off:
        click.echo("note: influx.enabled is false; re-queued points wait until it is on")
    if failed:
        sys.exit(1)


@deadletters.command("purge")
@config_option
@click.argument("ids", nargs=-1, type=int)
@click.option("--source", type=SOURCES, default=None, help="Only this source.")
@click.option("--reason", default=None, help="Only this reason.")
@click.option("--before", default=None, help="Only older than this (e.g. 30d, or an ISO time).")
@click.option("--replayed", "only_replayed", is_flag=True, help="Only those already replayed.")
@click.option("--yes", is_flag=True, help="Do not ask.")
def purge(
    config_path: Path | None,
    ids: tuple[int, ...],
    source: str | None,
    reason: str | None,
    before: str | None,
    only_replayed: bool,
    yes: bool,
) -> None:
    """Delete dead letters for good."""
    store = _open(load_or_exit(config_path))
    try:
        letters = _select(store, ids, source, reason, True, parse_since(before) if before else None)
        if only_replayed:
            letters = [x for x in letters if x["replayed_ts"]]
        if not letters:
            click.echo("Nothing to purge.")
            return
        if not yes and not click.confirm(f"Delete {len(letters)} dead letters?"):
            sys.exit(1)
        store.delete_dead_letters([x["id"] for x in letters])
    finally:
        store.close()
    click.echo(f"Purged {len(letters)} dead letters.")

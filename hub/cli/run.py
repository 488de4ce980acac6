"""`hub run`: the hub in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path

import click

from hub.bus.broker import BrokerError
from hub.bus.mqtt import MqttConnectError
from hub.cli.common import config_option, load_or_exit, resolve_config_path
from hub.logs import setup_logging
from hub.service import run_hub
from hub.store.sqlite import StoreError
from hub.worker import run_worker

log = logging.getLogger("hub")


@click.command()
@config_option
@click.option("--log-json", is_flag=True, default=None, help="Log one JSON object per line.")
@click.option(
    "--simulate/--no-simulate",
    default=None,
    help="Feed simulated air-quality nodes and a buggy (demo).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Override data_dir.",
)
@click.option(
    "--broker", "broker_url", default=None, help="Override broker.url (mqtt://host:port)."
)
@click.option(
    "--worker",
    is_flag=True,
    help="Run as one of several workers on one stream and one PostgreSQL store (store.url; docs/scaling.md).",
)
@click.option(
    "--worker-id",
    default="1",
    show_default=True,
    envvar="HUB_WORKER_ID",
    help="This worker's name, unique in the group and stable across restarts (its MQTT client id is <broker.client_id>-<worker-id>: the persistent session that keeps its unacknowledged messages).",
)
@click.option("--store", "store_url", default=None, help="Override store.url (postgresql://...).")
@click.option(
    "--web-port",
    type=click.IntRange(0, 65535),
    default=None,
    envvar="HUB_WEB_PORT",
    help="Override web.port: each worker on one machine needs its own (0 picks a free one; hub status shows it).",
)
def run(
    config_path: Path | None,
    log_json: bool | None,
    simulate: bool | None,
    data_dir: Path | None,
    broker_url: str | None,
    worker: bool,
    worker_id: str,
    store_url: str | None,
    web_port: int | None,
) -> None:
    """Run the hub: ingest, store, and (with --simulate) a demo feed.

    Exit codes: 0 stopped on request, 1 a vital task failed (the log says which),
    3 the MQTT broker cannot be used, 4 the store cannot be opened (damaged, foreign, newer,
    unreachable).
    """
    overrides: dict[tuple[str, ...], object] = {}
    if simulate is not None:
        overrides[("simulate", "enabled")] = simulate
    if data_dir is not None:
        overrides[("data_dir",)] = str(data_dir)
    if broker_url is not None:
        overrides[("broker", "url")] = broker_url
    if store_url is not None:
        overrides[("store", "url")] = store_url
    if web_port is not None:
        overrides[("web", "port")] = web_port
    config = load_or_exit(config_path, overrides)
    setup_logging(config.log, log_json)
    # Ingest allocates many short-lived objects per message (paho's MQTT 5 properties among
    # them); the default threshold of 700 ran a collection every few messages.
    gc.set_threshold(20_000, 50, 1000)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if worker:
            return await run_worker(config, stop, worker_id)
        if config.store.url:
            log.error(
                "store.url (PostgreSQL) is used by 'hub run --worker'; a plain 'hub run' keeps "
                "the SQLite store at store.path. Add --worker, or leave store.url empty."
            )
            return 4
        return await run_hub(config, stop, resolve_config_path(config_path))

    try:
        code = asyncio.run(main())
    except StoreError as exc:
        log.error("Cannot open the store: %s", exc)
        sys.exit(4)
    except BrokerError as exc:
        log.error("%s", exc)
        sys.exit(3)
    except MqttConnectError as exc:
        log.error("Cannot connect to the MQTT broker: %s", exc)
        sys.exit(3)
    if code:
        sys.exit(code)

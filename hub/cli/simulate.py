"""`hub simulate`: publish simulated air-quality nodes and a buggy to a broker."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import click

from hub.cli.common import config_option, load_or_exit
from hub.sources.simulate import Simulation, SimulatorPublisher, run_live, run_rounds


@click.command()
@config_option
@click.option(
    "--broker", "broker_url", default=None, help="mqtt://host:port (default: the hub's broker)."
)
@click.option("--nodes", default=3, show_default=True, help="Air-quality nodes.")
@click.option("--buggies", default=1, show_default=True, help="RC buggies.")
@click.option(
    "--interval",
    default=5.0,
    show_default=True,
    help="Seconds between a node's states (live mode).",
)
@click.option("--rate", default=10.0, show_default=True, help="Buggy frames per second.")
@click.option(
    "--rounds",
    default=None,
    type=int,
    help="Publish this many rounds as fast as the broker takes them, then exit (tests, load).",
)
@click.option(
    "--duration", default=None, type=float, help="Stop after this many seconds (live mode)."
)
@click.option("--seed", default=None, type=int, help="Random seed for repeatable data.")
@click.option(
    "--start",
    default=None,
    type=float,
    help="Unix time of the first sample with --rounds (default: now - rounds*interval).",
)
def simulate(config_path: Path | None, broker_url: str | None, nodes: int, buggies: int, interval: float, rate: float,
             rounds: int | None, duration: float | None, seed: int | None, start: float | None) -> None:  # fmt: skip
    """Publish realistic data for NODES ESPHome-style air-quality nodes and BUGGIES buggies."""
    overrides: dict[tuple[str, ...], object] | None = (
        {("broker", "url"): broker_url} if broker_url else None
    )
    config = load_or_exit(config_path, overrides)
    host, port, _ = config.broker.host_port_tls
    sim = Simulation(nodes, buggies, seed, config.broker.topic_prefix)
    publisher = SimulatorPublisher(
        host, port, client_id=f"hub-simulate-{int(time.time())}", username=config.broker.username,
        password=config.broker.password.get_secret_value() if config.broker.password else None,
    )  # fmt: skip
    publisher.connect()
    try:
        if rounds is not None:
            first = start if start is not None else time.time() - rounds * interval
            count = run_rounds(sim, publisher, rounds, first, interval, rate)
            click.echo(
                f"published {count} messages ({nodes} nodes x 7 sensors + {buggies} buggies, {rounds} rounds)"
            )
            return
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        click.echo(
            f"Simulating {nodes} nodes and {buggies} buggies on {host}:{port}; Ctrl-C stops."
        )
        run_live(sim, publisher, interval, rate, stop, duration)
    finally:
        publisher.close()

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Mosquitto, mosquitto_binary
from tests.support.postgres import Postgres, postgres_bin


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real, private Mosquitto on a free loopback port (persistence on)."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed (.ci/run installs it: apt-get install mosquitto)")
    with Mosquitto(tmp_path / "broker") as broker:
        yield broker


@pytest.fixture(scope="session")
def postgres_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """One private PostgreSQL for the session; each test takes its own database (`pg_url`)."""
    if postgres_bin("initdb") is None:
        pytest.fail(
            "PostgreSQL is not installed (./dev test installs it: apt-get install postgresql)"
        )
    with Postgres(tmp_path_factory.mktemp("postgres")) as cluster:
        yield cluster


_databases = itertools.count(1)


@pytest.fixture
def pg_url(postgres_cluster: Postgres) -> str:
    """The URL of a new, empty database for this test."""
    return postgres_cluster.create_database(f"t{next(_databases)}")

"""A private, real PostgreSQL for tests: Debian's server binaries, a fresh cluster in a temp
dir, a free loopback port and a unix socket beside the data.

initdb and postgres refuse to run as root (CI runs as root), so as root the cluster is made
and run by the `postgres` user Debian's package creates (or `nobody` when it is missing),
in a folder that user owns. Authentication is `trust` on loopback: the cluster lives only as
long as the test session and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from tests.support.mosquitto import free_port

BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/local/bin", "/usr/bin")


def postgres_bin(name: str) -> str | None:
    for folder in BIN_DIRS:
        path = Path(folder) / name
        if path.exists():
            return str(path)
    return shutil.which(name)


class Postgres:
    def __init__(self, workdir: Path) -> None:
        initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.workdir = workdir
        self.data = workdir / "data"
        self.sockets = workdir / "sock"
        self.log_path = workdir / "postgres.log"
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = "hub"
        self.runas: str | None = None
        if os.geteuid() == 0:
            self.runas = "postgres"
            try:
                pwd.getpwnam(self.runas)
            except KeyError:
                self.runas = "nobody"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/hub"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if self.runas is not None:
            cmd = ["runuser", "-u", self.runas, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if self.runas is not None:
            entry = pwd.getpwnam(self.runas)
            # The user must reach its folders: every parent of a pytest tmp dir is root's 0700.
            for folder in (self.workdir, self.sockets):
                os.chown(folder, entry.pw_uid, entry.pw_gid)
            parent = self.workdir
            while parent != parent.parent:
                parent = parent.parent
                with contextlib.suppress(OSError):
                    parent.chmod(parent.stat().st_mode | 0o011)  # search only, no listing
            self.log_path.touch()
            os.chown(self.log_path, entry.pw_uid, entry.pw_gid)
        if not self.data.exists():
            done = self._run(
                self.initdb, "-D", str(self.data), "-U", self.user, "-A", "trust",
                "-E", "UTF8", "--no-sync", "--no-instructions",
            )  # fmt: skip
            if done.returncode:
                raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")
        options = (
            f"-c listen_addresses={self.host} -p {self.port} -k {self.sockets} "
            "-c fsync=off -c synchronous_commit=on -c full_page_writes=off -c max_connections=50"
        )
        done = self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "start",
        )
        if done.returncode:
            raise RuntimeError(f"postgres did not start: {self.log_path.read_text()[-2000:]}")
        postgres = postgres_bin("createdb")
        done = self._run(
            postgres or "createdb", "-h", self.host, "-p", str(self.port), "-U", self.user, "hub"
        )
        if done.returncode and "already exists" not in done.stderr:
            raise RuntimeError(f"createdb failed: {done.stderr}")

    def create_database(self, name: str) -> str:
        """A new empty database in this cluster; returns its URL."""
        created = self._run(
            postgres_bin("createdb") or "createdb", "-h", self.host, "-p", str(self.port),
            "-U", self.user, name,
        )  # fmt: skip
        if created.returncode:
            raise RuntimeError(f"createdb {name} failed: {created.stderr}")
        return f"postgresql://{self.user}@{self.host}:{self.port}/{name}"

    def stop(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def __enter__(self) -> Postgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (self.data / "postmaster.pid").exists():
            time.sleep(0.1)

"""Backups of a hub's data, their restore, and explicit store schema upgrades.

A backup is one tar file (mode 0600: it holds every reading and, when asked, the secrets):

    manifest.json          what it is: format, hub version, schema, when, sample count, files
    store/<name>           the SQLite store (samples, rollups, outbox, dead letters, alerts,
                           devices, RC sessions), copied with SQLite's online backup API
    data/<path>            the data directory's registry files (devices.json, adopted.json)
    data/<path>, config/   secrets and hub.yaml, only with `secrets=True`

The store copy is taken in a single backup step on its own read-only connection: in WAL mode
that is one read transaction, so the copy is exactly the store as of the moment the step began
(everything committed before it, nothing half-written) while the hub's writer goes on
committing. An incremental backup (a few pages per step) would restart at every commit of the
writer and never finish at the hub's rates.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hub import __version__
from hub.store.sqlite import SCHEMA_VERSION, Store, StoreError, quick_check

log = logging.getLogger(__name__)

FORMAT = "hub-backup/1"
MANIFEST = "manifest.json"
# Files of the data directory that describe devices, not secrets: always in a backup.
REGISTRY_FILES = ("devices.json", "adopted.json")
# Files that hold credentials (device API keys, MQTT passwords, the web token's hash): only
# when asked, because a backup often travels to places the data directory does not.
SECRET_FILES = (
    "secrets.yaml",
    "hub-mqtt.yaml",
    "mosquitto/passwd",
    "mosquitto/acl",
    "web_token.json",
)


class BackupError(Exception):
    """A backup or restore cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    samples: int
    schema: int
    files: list[str]
    seconds: float


@dataclass(frozen=True)
class RestoreResult:
    store: Path
    samples: int
    schema: int
    kept: list[Path] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _private_file(path: Path) -> int:
    """Create (or truncate) `path` readable by its owner only, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    return fd


def schema_of(path: Path) -> int | None:
    """The schema version written in a store's meta table (None: no hub store there)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else None
    except (sqlite3.Error, ValueError):
        return None
    finally:
        conn.close()


def copy_store(source: Path, target: Path) -> int:
    """Copy a live store with SQLite's backup API into `target` (0600); its sample count.

    The hub may be writing `source` meanwhile: see the module docstring for why that is safe.
    """
    os.close(_private_file(target))
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.execute("PRAGMA busy_timeout=30000")
        src.backup(dst, pages=-1)  # one step: one read transaction, one consistent snapshot
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        samples = int(dst.execute("SELECT count(*) FROM samples").fetchone()[0])
        problems = quick_check(dst, None)
        if problems:
            raise BackupError(f"the copy of {source} fails its integrity check: {problems[:3]}")
        return samples
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"cannot copy the store {source}: {exc}") from exc
    finally:
        src.close()
        dst.close()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    info = tar.gettarinfo(str(path), arcname=name)
    info.mode = 0o600
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    with path.open("rb") as handle:
        tar.addfile(info, handle)


def take_backup(
    store: Path,
    data_dir: Path,
    output: Path,
    *,
    secrets: bool = False,
    config_file: Path | None = None,
) -> BackupResult:
    """Write a backup of `store` (and the registry, and secrets when asked) to `output`."""
    started = time.monotonic()
    if not store.exists():
        raise BackupError(f"no store at {store}: nothing to back up")
    schema = schema_of(store)
    if schema is None:
        raise BackupError(f"{store} is not a hub store (it has no schema version)")
    output.parent.mkdir(parents=True, exist_ok=True)
    compress = output.name.endswith((".tar.gz", ".tgz"))
    files: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".hub-backup-", dir=output.parent) as tmp:
        copy = Path(tmp) / store.name
        samples = copy_store(store, copy)
        partial = Path(tmp) / "backup.tar"
        fd = _private_file(partial)
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w:gz" if compress else "w") as tar,
        ):
            extra: list[tuple[str, Path]] = [
                (f"data/{name}", data_dir / name) for name in REGISTRY_FILES
            ]
            if secrets:
                extra += [(f"data/{name}", data_dir / name) for name in SECRET_FILES]
                if config_file is not None:
                    extra.append((f"config/{config_file.name}", config_file))
            present = [(name, path) for name, path in extra if path.is_file()]
            manifest = {
                "format": FORMAT,
                "hub_version": __version__,
                "schema": schema,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "store": f"store/{store.name}",
                "samples": samples,
                "secrets": secrets,
                "files": [name for name, _ in present],
            }
            # The manifest goes first so that a reader can tell a backup from any tar quickly.
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
            _add_file(tar, f"store/{store.name}", copy)
            for name, path in present:
                _add_file(tar, name, path)
            files = [f"store/{store.name}", *(name for name, _ in present)]
        os.replace(partial, output)  # atomic: a crash never leaves half a backup under the name
    return BackupResult(output, samples, schema, files, time.monotonic() - started)


def read_manifest(archive: Path) -> tuple[tarfile.TarFile, dict[str, object]]:
    """Open a backup and return it with its manifest, or say plainly that it is not one."""
    if not archive.is_file():
        raise BackupError(f"{archive}: no such file")
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115  # handed to the caller, who closes it
    except (tarfile.TarError, OSError):
        raise BackupError(f"{archive} is not a hub backup (not a tar archive)") from None
    try:
        member = tar.getmember(MANIFEST)
        handle = tar.extractfile(member)
        if handle is None:
            raise KeyError(MANIFEST)
        manifest = json.loads(handle.read())
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT!r}")
    except (KeyError, ValueError, tarfile.TarError, EOFError, OSError) as exc:
        tar.close()
        raise BackupError(f"{archive} is not a hub backup (no valid {MANIFEST}: {exc})") from None
    return tar, manifest


def _safe_name(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def restore_backup(
    archive: Path,
    store: Path,
    data_dir: Path,
    *,
    secrets: bool = False,
    config_file: Path | None = None,
) -> RestoreResult:
    """Put a backup's store (and registry; secrets and config when asked) in place.

    What is replaced is kept beside it as <name>.before-restore-<time>. The hub must not run.
    """
    tar, manifest = read_manifest(archive)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept: list[Path] = []
    restored: list[str] = []
    with (
        tar,
        tempfile.TemporaryDirectory(prefix=".hub-restore-", dir=_existing_parent(store)) as tmp,
    ):
        store_name = str(manifest.get("store", ""))
        try:
            member = tar.getmember(store_name)
            handle = tar.extractfile(member)
        except KeyError:
            handle = None
        if handle is None or not _safe_name(store_name):
            raise BackupError(
                f"{archive} is damaged: its manifest names {store_name!r}, which it lacks"
            )
        staged = Path(tmp) / "store.sqlite3"
        with os.fdopen(_private_file(staged), "wb") as out:
            shutil.copyfileobj(handle, out)
        schema = schema_of(staged)
        if schema is None:
            raise BackupError(f"{archive} is damaged: its store is not a readable hub store")
        if schema > SCHEMA_VERSION:
            raise BackupError(
                f"{archive} holds a store of schema {schema}, written by a newer hub (this one "
                f"knows {SCHEMA_VERSION}): upgrade the hub first"
            )
        conn = sqlite3.connect(staged)
        try:
            problems = quick_check(conn, None, full=True)
            samples = int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{archive} is damaged: its store cannot be read ({exc})") from None
        finally:
            conn.close()
        if problems:
            raise BackupError(
                f"{archive} is damaged: its store fails the integrity check: {problems[:3]}"
            )

        store.parent.mkdir(parents=True, exist_ok=True)
        if store.exists():
            kept.append(_keep(store, stamp))
        # A -wal or -shm left from the old store would be applied to the restored one.
        for suffix in ("-wal", "-shm", "-journal"):
            stale = store.with_name(store.name + suffix)
            if stale.exists():
                kept.append(_keep(stale, stamp))
        os.replace(staged, store)
        restored.append(str(store))

        wanted: list[tuple[str, Path]] = [
            (f"data/{name}", data_dir / name) for name in REGISTRY_FILES
        ]
        if secrets:
            wanted += [(f"data/{name}", data_dir / name) for name in SECRET_FILES]
            if config_file is not None:
                wanted += [
                    (name, config_file)
                    for name in _names(manifest)
                    if name.startswith("config/") and _safe_name(name)
                ]
        names = set(_names(manifest))
        for name, target in wanted:
            if name not in names:
                continue
            handle = tar.extractfile(name)
            if handle is None:
                raise BackupError(f"{archive} is damaged: {name} is listed but missing")
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                kept.append(_keep(target, stamp))
            with os.fdopen(_private_file(target), "wb") as out:
                shutil.copyfileobj(handle, out)
            restored.append(str(target))
    return RestoreResult(store, samples, schema, kept, restored)


def _names(manifest: dict[str, object]) -> Iterable[str]:
    files = manifest.get("files", [])
    return [str(name) for name in files] if isinstance(files, list) else []


def _existing_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def _keep(path: Path, stamp: str) -> Path:
    kept = path.with_name(f"{path.name}.before-restore-{stamp}")
    os.replace(path, kept)
    return kept


@dataclass(frozen=True)
class MigrateResult:
    store: Path
    before: int
    after: int
    backup: Path | None


def migrate_store(store: Path, *, backup: bool = True) -> MigrateResult:
    """Upgrade a store to this hub's schema, through every migration in order.

    The migrations themselves are hub.store.sqlite.MIGRATIONS, applied by Store at open, one
    transaction per version; this runs them on purpose, with a copy of the old store first.
    """
    if not store.exists():
        raise BackupError(f"no store at {store}")
    before = schema_of(store)
    if before is None:
        raise BackupError(f"{store} is not a hub store (it has no schema version)")
    if before > SCHEMA_VERSION:
        raise BackupError(
            f"{store} was written by a newer hub (schema {before}, this hub knows "
            f"{SCHEMA_VERSION}): upgrade the hub; a store is never downgraded"
        )
    if before == SCHEMA_VERSION:
        return MigrateResult(store, before, before, None)
    copy: Path | None = None
    if backup:
        copy = store.with_name(f"{store.name}.schema{before}-{time.strftime('%Y%m%d-%H%M%S')}")
        copy_store(store, copy)
    try:
        Store(store, "full").close()
    except StoreError as exc:
        raise BackupError(str(exc)) from None
    after = schema_of(store)
    if after != SCHEMA_VERSION:
        raise BackupError(
            f"{store} is at schema {after} after the upgrade, expected {SCHEMA_VERSION}"
        )
    return MigrateResult(store, before, after, copy)

"""The installed environment is the locked one, and nothing in it runs code at start-up.

A `.pth` file in site-packages is read by every interpreter start, and a line of it that
starts with `import` runs. `urllib3-future` (pulled in by homeassistant-api 6 via niquests)
installs one and overwrites site-packages/urllib3 with its fork, so influxdb-client ran on
code requirements.lock does not name (issue #14). These checks fail on such an environment:
an unexpected .pth file, an installed version other than the lock's, a package missing from
or unknown to the lock, or an installed file that differs from what its own package installed.
"""

from __future__ import annotations

import base64
import hashlib
import re
import site
import sysconfig
from importlib import metadata
from pathlib import Path

from tests.support.hubproc import REPO

LOCK = REPO / "requirements.lock"
# The editable install of the hub itself, and setuptools' own distutils shim.
ALLOWED_PTH = re.compile(r"^(__editable__\.hub-[^/]+\.pth|distutils-precedence\.pth)$")
# The installers, and the hub: not in the lock by design.
NOT_LOCKED = {"pip", "hub"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def site_dirs() -> list[Path]:
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    paths.update(site.getsitepackages())
    return sorted({Path(p) for p in paths if Path(p).is_dir()})


def installed() -> dict[str, metadata.Distribution]:
    roots = {str(p) for p in site_dirs()}
    found: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions(path=sorted(roots)):
        name = canonical(dist.metadata["Name"])
        found.setdefault(name, dist)  # the first on the path is the one imported
    return found


def test_the_lock_has_a_hash_for_every_pin() -> None:
    text = LOCK.read_text()
    entries = re.split(
        r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1] if text.startswith("#") else text
    )
    pins = [e for e in entries if re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==", e)]
    assert len(pins) == len(locked()) > 50
    for entry in pins:
        assert "--hash=sha256:" in entry, entry.splitlines()[0]
    assert "homeassistant-api" in locked() and "niquests" not in locked()
    assert "urllib3-future" not in locked()


def test_no_pth_file_but_the_editable_install_and_setuptools() -> None:
    unexpected = [
        str(pth)
        for directory in site_dirs()
        for pth in directory.glob("*.pth")
        if not ALLOWED_PTH.match(pth.name)
    ]
    assert not unexpected, (
        f"start-up hooks in site-packages: {unexpected}; a .pth file runs at every interpreter "
        "start (see this test's docstring)"
    )


def test_installed_versions_are_the_locked_ones() -> None:
    pins = locked()
    have = installed()
    differ = {
        name: (dist.version, pins[name])
        for name, dist in have.items()
        if name in pins and dist.version != pins[name]
    }
    assert not differ, f"installed != locked (installed, locked): {differ}"
    unknown = sorted(set(have) - set(pins) - NOT_LOCKED)
    assert not unknown, f"installed but not in requirements.lock: {unknown}"
    missing = sorted(set(pins) - set(have))
    assert not missing, f"in requirements.lock but not installed: {missing}"


def test_no_installed_module_was_overwritten_by_another_package() -> None:
    """Every .py file a locked package installed still has the hash its RECORD names."""
    changed: list[str] = []
    checked = 0
    for name, dist in installed().items():
        if name in NOT_LOCKED:
            continue
        for entry in dist.files or ():
            if entry.hash is None or entry.hash.mode != "sha256" or entry.suffix != ".py":
                continue
            path = Path(str(dist.locate_file(entry)))
            try:
                data = path.read_bytes()
            except OSError:
                changed.append(f"{name}: {entry} is missing")
                continue
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            checked += 1
            if digest.decode() != entry.hash.value:
                changed.append(f"{name}: {entry}")
    assert checked > 1000
    assert not changed, f"files changed after their package installed them: {changed[:10]}"

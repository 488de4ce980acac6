"""deploy/systemd: the units pass `systemd-analyze verify` and score <= 2.0 in `security`;
`hub install-service` writes exactly them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub.systemd_units import UnitSettings, render

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
HUB_EXE = Path(sys.executable).parent / "hub"


def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is missing (./dev test installs Debian's systemd)")
    return found


@pytest.mark.parametrize("name", ["hub", "hub-bench"])
def test_repository_units_are_what_install_service_writes(name: str) -> None:
    assert (UNITS / f"{name}.service").read_text() == render(name)


@pytest.mark.parametrize("name", ["hub", "hub-bench"])
def test_unit_verifies_and_scores_ok(name: str, tmp_path: Path) -> None:
    # The unit as installed on this machine: its ExecStart must exist for verify.
    unit = tmp_path / f"{name}.service"
    unit.write_text(render(name, UnitSettings(exec=HUB_EXE)))
    verify = subprocess.run(
        [analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stderr.strip() == "", verify.stderr  # no warnings either
    security = subprocess.run(
        [analyze(), "security", "--offline=true", "--threshold=20", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", security.stdout)
    assert score, security.stdout[-2000:] + security.stderr
    print(f"\n{name}.service: systemd-analyze security {score.group(1)} {score.group(2)}")
    assert float(score.group(1)) <= 2.0 and score.group(2) == "OK"
    assert security.returncode == 0


def test_verify_can_fail(tmp_path: Path) -> None:
    """A broken unit is refused, so the check above means something."""
    unit = tmp_path / "hub.service"
    unit.write_text(render("hub", UnitSettings(exec=tmp_path / "no-such-hub")))
    verify = subprocess.run([analyze(), "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode != 0


def test_units_have_what_the_issue_asks() -> None:
    text = render("hub")
    for line in (
        "User=hub",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/hub",
        "NoNewPrivileges=yes",
        "SupplementaryGroups=dialout",
        "Restart=on-failure",
        "StandardOutput=journal",
    ):
        assert line in text.splitlines(), line
    # The data directory is the only writable path.
    assert re.findall(r"^ReadWritePaths=(.*)$", text, re.M) == ["/var/lib/hub"]


def test_install_service_writes_units_and_the_user_config(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["PYTHONPATH"] = str(REPO)
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    args = [
        sys.executable, "-m", "hub", "install-service", "--bench", "--no-enable",
        "--user", user, "--unit-dir", str(tmp_path / "units"),
        "--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "etc" / "hub.yaml"),
        "--exec", str(HUB_EXE),
    ]  # fmt: skip
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    if os.geteuid() != 0:
        assert result.returncode == 2 and "needs root" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    settings = UnitSettings(
        exec=HUB_EXE, data_dir=tmp_path / "data", config=tmp_path / "etc" / "hub.yaml", user=user
    )
    for name in ("hub", "hub-bench"):
        assert (tmp_path / "units" / f"{name}.service").read_text() == render(name, settings)
    config = tmp_path / "etc" / "hub.yaml"
    assert config.exists() and (config.stat().st_mode & 0o777) == 0o640
    assert (tmp_path / "data").is_dir()
    printed = subprocess.run(
        [*args[:4], "--print", "--exec", str(HUB_EXE)], env=env, capture_output=True, text=True
    )
    assert printed.returncode == 0 and "ProtectSystem=strict" in printed.stdout

"""`hub install-service`: run the hub (and the bench logger) under systemd, hardened."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import click

from hub.systemd_units import DEFAULT_CONFIG, DEFAULT_DATA_DIR, DEFAULT_USER, UnitSettings, render


def _default_exec() -> Path:
    """The `hub` of this installation (its virtualenv), which the unit must start."""
    found = shutil.which("hub") or sys.argv[0]
    return Path(found).absolute()


def _fail(message: str, code: int = 1) -> None:
    click.echo(message, err=True)
    sys.exit(code)


def _run(command: list[str]) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        _fail(f"{command[0]} is not installed: cannot run {' '.join(command)}")
    except subprocess.CalledProcessError as exc:
        _fail(f"{' '.join(command)} failed: {(exc.stderr or exc.stdout).strip()}")


def _ensure_user(user: str, data_dir: Path) -> None:
    """A dedicated system user with no login and no home of its own but the data dir."""
    try:
        pwd.getpwnam(user)
        return
    except KeyError:
        pass
    _run(
        [
            "useradd", "--system", "--user-group", "--no-create-home",
            "--home-dir", str(data_dir), "--shell", "/usr/sbin/nologin", user,
        ]
    )  # fmt: skip


@click.command("install-service")
@click.option("--user", default=DEFAULT_USER, show_default=True, help="Dedicated user the hub runs as (created when missing).")  # fmt: skip
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA_DIR, show_default=True, help="The only directory the service may write.")  # fmt: skip
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CONFIG, show_default=True, help="hub.yaml the service reads (an example is written when missing).")  # fmt: skip
@click.option("--exec", "executable", type=click.Path(dir_okay=False, path_type=Path), default=None, help="The hub executable (default: this one).")  # fmt: skip
@click.option(
    "--bench", is_flag=True, help="Also install hub-bench.service, the serial bench logger."
)
@click.option("--unit-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("/etc/systemd/system"), show_default=True)  # fmt: skip
@click.option("--print", "print_only", is_flag=True, help="Print the unit(s) and change nothing.")
@click.option("--no-enable", is_flag=True, help="Write the files but do not enable or start.")
def install_service(
    user: str,
    data_dir: Path,
    config_file: Path,
    executable: Path | None,
    bench: bool,
    unit_dir: Path,
    print_only: bool,
    no_enable: bool,
) -> None:
    """Write hub.service (and hub-bench.service), create the user, enable and start it."""
    settings = UnitSettings(
        exec=(executable or _default_exec()).absolute(),
        data_dir=data_dir.absolute(),
        config=config_file.absolute(),
        user=user,
    )
    names = ["hub", "hub-bench"] if bench else ["hub"]
    if print_only:
        for name in names:
            click.echo(f"# {unit_dir / (name + '.service')}")
            click.echo(render(name, settings))
        return
    if os.geteuid() != 0:
        _fail("install-service needs root (it writes units and creates a user): run it with sudo, or use --print.", 2)  # fmt: skip
    if not settings.exec.is_file():
        _fail(
            f"{settings.exec} does not exist: pass --exec with the path of the hub executable.", 2
        )
    _ensure_user(user, settings.data_dir)
    uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chown(settings.data_dir, uid, gid)
    os.chmod(settings.data_dir, 0o750)
    if not settings.config.exists():
        from hub.config.loader import example_config

        settings.config.parent.mkdir(parents=True, exist_ok=True)
        settings.config.write_text(example_config(), encoding="utf-8")
        click.echo(f"Wrote an example config to {settings.config}: edit it, then restart the hub.")
    # The config may hold secrets: readable by root and the hub's group only.
    os.chown(settings.config, 0, gid)
    os.chmod(settings.config, 0o640)
    unit_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = unit_dir / f"{name}.service"
        path.write_text(render(name, settings), encoding="utf-8")
        path.chmod(0o644)
        click.echo(f"Wrote {path}")
    try:
        grp.getgrnam("dialout")
    except KeyError:
        click.echo("Note: there is no dialout group here; serial adapters will not be readable.")
    if no_enable:
        click.echo(
            f"Enable it with: systemctl daemon-reload && systemctl enable --now {' '.join(names)}"
        )
        return
    _run(["systemctl", "daemon-reload"])
    _run(["systemctl", "enable", "--now", *(f"{n}.service" for n in names)])
    click.echo(f"Enabled and started {', '.join(names)}. Logs: journalctl -u hub -f")

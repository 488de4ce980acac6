"""The systemd units of the hub and of the bench logger, rendered for one installation.

deploy/systemd/*.service are these templates rendered with the defaults (a test keeps them
equal), so the files a reader finds in the repository are the ones `hub install-service`
writes. The hardening is what `systemd-analyze security` scores; every line is needed by the
score or by the hub, and the comments say which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_EXEC = Path("/opt/hub/venv/bin/hub")
DEFAULT_DATA_DIR = Path("/var/lib/hub")
DEFAULT_CONFIG = Path("/etc/hub/hub.yaml")
DEFAULT_USER = "hub"

# Shared by both units: what the hub may touch. Serial adapters are the only devices it needs.
_HARDENING = """\
# Hardening (systemd-analyze security scores this unit; keep it at 2.0 or lower).
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={data_dir}
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
# Serial adapters only (FTDI/CP210x/CH340 are ttyUSB, CDC-ACM boards ttyACM); access is
# through the dialout group, like any user's.
DevicePolicy=closed
DeviceAllow=char-ttyUSB rw
DeviceAllow=char-ttyACM rw
ProtectClock=yes
ProtectHostname=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
ProcSubset=pid
CapabilityBoundingSet=
AmbientCapabilities=
# AF_NETLINK: glibc's getaddrinfo with AI_ADDRCONFIG asks the kernel over netlink which
# address families are configured; without it name lookups fail in odd ways.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
KeyringMode=private
PrivateIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
UMask=0077
"""

HUB_UNIT = """\
# The telemetry hub: ingest, store, alerts, web dashboard. Written by `hub install-service`.
[Unit]
Description=Telemetry hub (MQTT ingest, SQLite store, alerts, web dashboard)
Wants=network-online.target
After=network-online.target mosquitto.service

[Service]
Type=simple
User={user}
Group={user}
SupplementaryGroups=dialout
WorkingDirectory={data_dir}
Environment=HUB_CONFIG={config}
Environment=HUB_DATA_DIR={data_dir}
Environment=PYTHONUNBUFFERED=1
ExecStart={exec} run
# Exit codes (README): 1 a vital task failed, 3 broker, 4 store refused (damaged, foreign,
# newer). 2 is a configuration error and 4 needs a person: restarting cannot fix either.
Restart=on-failure
RestartSec=5s
RestartPreventExitStatus=2 4
# A clean stop commits the batch in hand and marks the hub offline; give it time.
TimeoutStopSec=30s
# Logs go to journald (journalctl -u hub); rotation is journald's (SystemMaxUse=).
StandardOutput=journal
StandardError=journal
SyslogIdentifier=hub
{hardening}
[Install]
WantedBy=multi-user.target
"""

BENCH_UNIT = """\
# The RC bench logger: an ESC's serial telemetry -> MQTT, spooled to disk while the broker is
# away. Written by `hub install-service --bench`; settings in {bench_env}.
[Unit]
Description=Telemetry hub bench logger (serial ESC telemetry to MQTT)
Wants=network-online.target
After=network-online.target hub.service

[Service]
Type=simple
User={user}
Group={user}
SupplementaryGroups=dialout
WorkingDirectory={data_dir}
Environment=HUB_CONFIG={config}
# BENCH_* are not HUB_* on purpose: HUB_* variables are config overrides.
Environment=BENCH_PORT=/dev/ttyUSB0
Environment=BENCH_VEHICLE=buggy
Environment=BENCH_BROKER=mqtt://127.0.0.1:1883
EnvironmentFile=-{bench_env}
ExecStart={exec} serial log --no-tui --port ${{BENCH_PORT}} --vehicle ${{BENCH_VEHICLE}} --broker ${{BENCH_BROKER}} --capture-dir {data_dir}/captures --spool {data_dir}/serial-spool.jsonl
# An unplugged adapter ends the logger; it comes back when the adapter does.
Restart=always
RestartSec=5s
StandardOutput=journal
StandardError=journal
SyslogIdentifier=hub-bench
{hardening}
[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class UnitSettings:
    exec: Path = DEFAULT_EXEC
    data_dir: Path = DEFAULT_DATA_DIR
    config: Path = DEFAULT_CONFIG
    user: str = DEFAULT_USER

    @property
    def bench_env(self) -> Path:
        return self.config.parent / "bench.env"


def render(name: str, settings: UnitSettings | None = None) -> str:
    """The unit `name` ("hub" or "hub-bench") for these settings."""
    s = settings or UnitSettings()
    values = {
        "exec": s.exec,
        "data_dir": s.data_dir,
        "config": s.config,
        "user": s.user,
        "bench_env": s.bench_env,
    }
    hardening = _HARDENING.format(**values)
    template = {"hub": HUB_UNIT, "hub-bench": BENCH_UNIT}[name]
    return template.format(hardening=hardening, **values)

"""The `log:`, `simulate:` and `status:` sections."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from hub.config.base import ConfigModel, Duration

LogLevel = Literal["debug", "info", "warning", "error"]


class LogConfig(ConfigModel):
    """Logging: human lines by default, JSON lines with `json: true` or `hub run --log-json`."""

    level: LogLevel = Field("info", description="Default level.")
    json_lines: bool = Field(
        False, alias="json", description="One JSON object per line (for log shippers)."
    )
    levels: dict[str, LogLevel] = Field(
        default_factory=dict, description="Per-module levels, e.g. {hub.bus: debug}."
    )

    model_config = ConfigDict(**ConfigModel.model_config, populate_by_name=True)


class SimulateConfig(ConfigModel):
    """The built-in simulator, run inside `hub run` when enabled (the zero-set-up demo)."""

    enabled: bool = Field(
        False, description="Feed simulated devices into the broker from inside `hub run`."
    )
    airq_nodes: int = Field(3, ge=0, le=1000, description="Simulated ESPHome air-quality nodes.")
    buggies: int = Field(1, ge=0, le=100, description="Simulated RC buggies driving sessions.")
    interval: Duration = Field(
        5.0, description="Seconds between two states of one air-quality sensor."
    )
    buggy_rate: float = Field(
        10.0, gt=0, le=1000, description="Telemetry frames per second of a buggy."
    )
    seed: int | None = Field(None, description="Random seed, for repeatable demos and tests.")


class StatusConfig(ConfigModel):
    """How the running hub reports on itself."""

    interval: Duration = Field(
        2.0, description="How often status.json in data_dir and the stats topic are refreshed."
    )
    publish_stats: bool = Field(True, description="Publish counters as JSON to <prefix>/stats.")

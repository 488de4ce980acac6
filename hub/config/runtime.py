"""The `log:`, `simulate:` and `status:` sections."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

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
    buggies: int = Field(
        1, ge=0, le=100, description="Simulated RC buggies driving runs with pit stops."
    )
    interval: Duration = Field(
        5.0, description="Seconds between two states of one air-quality sensor."
    )
    buggy_rate: float = Field(
        10.0, gt=0, le=1000, description="Telemetry frames per second of a buggy."
    )
    seed: int | None = Field(None, description="Random seed, for repeatable demos and tests.")
    drive_time: Duration = Field(
        45.0, gt=0, description="How long a simulated buggy drives before it stops in the pit."
    )
    pit_stop: Duration = Field(
        30.0,
        description="How long a simulated buggy stands still between two runs (0: it never stops).",
    )
    session_gap: Duration = Field(
        15.0,
        ge=2.0,
        description=(
            "Stillness that ends a simulated buggy's drive session (a real vehicle's is "
            "derive.rc.<name>.session.idle_timeout, 60 s by default); shorter than pit_stop, "
            "so each run is a session."
        ),
    )

    @model_validator(mode="after")
    def pit_stop_ends_a_session(self) -> SimulateConfig:
        if self.pit_stop and self.pit_stop <= self.session_gap:
            raise ValueError(
                f"simulate.pit_stop ({self.pit_stop:g} s) must be longer than "
                f"simulate.session_gap ({self.session_gap:g} s), or a pit stop never ends a "
                "session; or set pit_stop to 0 to drive without stopping"
            )
        return self


class StatusConfig(ConfigModel):
    """How the running hub reports on itself."""

    interval: Duration = Field(
        2.0, description="How often status.json in data_dir and the stats topic are refreshed."
    )
    publish_stats: bool = Field(True, description="Publish counters as JSON to <prefix>/stats.")

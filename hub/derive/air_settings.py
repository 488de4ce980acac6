"""Config of the air-quality derivations (`derive.air` in hub.yaml): which indices each node gets.

    derive:
      air:
        defaults:                 # applies to every air node
          aqi_in: false
        nodes:
          balcony:                # only the keys written here override the defaults
            correction: epa_2021
            correction_input: pm_2_5_std
            sensors: {pm2_5: pm_2_5, humidity: bme280_humidity}

`sensors` and `correction_input` name series by their `sensor` tag (the ESPHome object id), for
nodes that publish one metric from two sensors (a PMS5003 gives `pm_2_5_std` and `pm_2_5`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hub.config.base import ConfigModel, Duration

__all__ = ["AirNodeSettings", "AirSettings"]

CorrectionChoice = Literal["none", "epa_2021", "epa_fasm_2021", "epa_2022"]


class AirNodeSettings(ConfigModel):
    """What the hub derives for one air-quality node, and from which of its series."""

    aqi_us: bool = Field(
        default=True, description="US EPA AQI (2024) from 24-h PM2.5/PM10 means, hourly."
    )
    aqi_us_nowcast: bool = Field(
        default=True, description="PM2.5 NowCast and its US AQI, every completed hour."
    )
    aqi_in: bool = Field(
        default=False,
        description="India NAQI from 24-h means; CPCB needs 3 pollutants incl. a PM "
        "(see aqi_in_min_pollutants), so a PM-only node reports nothing by default.",
    )
    psychrometrics: bool = Field(
        default=True, description="Dew point and absolute humidity from temperature and humidity."
    )
    comfort_score: bool = Field(default=True, description="The hub's 0-100 indoor comfort score.")
    correction: CorrectionChoice = Field(
        default="none",
        description="PM2.5 humidity correction for Plantower sensors, applied to hourly means: "
        "epa_2021 and epa_2022 take CF=1 (ESPHome pm_2_5_std), epa_fasm_2021 takes ATM.",
    )
    correction_input: str | None = Field(
        default=None,
        description="`sensor` tag of the pm2_5 series the correction reads (e.g. pm_2_5_std); "
        "default: the series chosen by `sensors.pm2_5`.",
    )
    aqi_input: Literal["auto", "raw", "corrected"] = Field(
        default="auto",
        description="PM2.5 used for the AQI and NowCast: the corrected hourly means, the raw "
        "ones, or auto (corrected when a correction is configured).",
    )
    sensors: dict[str, str] = Field(
        default_factory=dict,
        description="Metric -> `sensor` tag of the series to use when a node has several "
        "(pm2_5, pm10, co2, voc_index, nox_index, temperature, humidity). Unlisted: any series.",
    )
    sample_interval: Duration = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="How often the node reports; an hour is cut into slots of this length "
        "(at least 1 min) for the completeness check.",
    )
    min_hour_coverage: float = Field(
        default=0.75, gt=0, le=1, description="Share of an hour's slots that need a sample."
    )
    hour_grace: Duration = Field(
        default=60.0,
        ge=0,
        le=600,
        description="How long after an hour ends late samples still count for it.",
    )
    min_hours_24h: int = Field(
        default=18, ge=1, le=24, description="Valid hours needed for a 24-h mean (EPA: 75 %)."
    )
    min_hours_24h_in: int = Field(
        default=16, ge=1, le=24, description="Valid hours needed for an India 24-h mean (CPCB: 16)."
    )
    aqi_in_min_pollutants: int = Field(
        default=3, ge=1, le=8, description="Pollutants needed for an India AQI (CPCB: 3)."
    )
    instant_interval: Duration = Field(
        default=60.0,
        ge=0,
        description="Least time between two dew point / absolute humidity / comfort readings.",
    )
    max_age: Duration = Field(
        default=300.0,
        gt=0,
        description="Oldest input an instant value (dew point, comfort) may be built from.",
    )

    @model_validator(mode="after")
    def _corrected_needs_a_correction(self) -> AirNodeSettings:
        if self.aqi_input == "corrected" and self.correction == "none":
            raise ValueError("aqi_input: corrected needs a `correction` (e.g. epa_2021)")
        return self

    @property
    def use_corrected(self) -> bool:
        """Whether the AQI and NowCast read the corrected PM2.5."""
        return self.correction != "none" and self.aqi_input != "raw"


class AirSettings(ConfigModel):
    """The `derive.air` section: defaults for every node and per-node overrides."""

    enabled: bool = Field(default=True, description="Derive air-quality readings at all.")
    defaults: AirNodeSettings = Field(
        default_factory=AirNodeSettings, description="Settings for every air node."
    )
    nodes: dict[str, AirNodeSettings] = Field(
        default_factory=dict,
        description="Per-device overrides; only the keys written here replace the defaults.",
    )

    def for_node(self, device: str) -> AirNodeSettings:
        """The defaults with this device's explicitly written keys laid over them."""
        override = self.nodes.get(device)
        if override is None:
            return self.defaults
        merged = self.defaults.model_dump()
        merged.update(override.model_dump(exclude_unset=True))
        return AirNodeSettings.model_validate(merged)

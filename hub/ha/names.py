"""Entity names as a Home Assistant user writes them (pure).

Home Assistant shows an MQTT entity as "<device name> <entity name>" (`has_entity_name`), so
an entity's own name is short and names only the quantity: "PM2.5", "Comfort score",
"CO2 high". The catalog's descriptions ("PM2.5 mass concentration (as the sensor reports
it)") are documentation, not names. Acronyms keep their spelling (CO2, VOC, AQI, ESC, BEC).
"""

from __future__ import annotations

import re

SENSOR_NAMES: dict[str, str] = {
    "pm1": "PM1",
    "pm2_5": "PM2.5",
    "pm10": "PM10",
    "co2": "CO2",
    "voc_index": "VOC index",
    "nox_index": "NOx index",
    "temperature": "Temperature",
    "humidity": "Humidity",
    "pressure": "Pressure",
    "gas_resistance": "Gas resistance",
    "aqi_us": "AQI (US)",
    "aqi_us_nowcast": "AQI NowCast (US)",
    "pm2_5_nowcast": "PM2.5 NowCast",
    "pm2_5_corrected": "PM2.5 corrected",
    "aqi_in": "AQI (India)",
    "dew_point": "Dew point",
    "absolute_humidity": "Absolute humidity",
    "comfort_score": "Comfort score",
    "pack_voltage": "Pack voltage",
    "cell_voltage_avg": "Cell voltage",
    "cell_voltage_min": "Lowest cell",
    "cell_voltage_max": "Highest cell",
    "current": "Current",
    "power": "Power",
    "consumed_mah": "Charge used",
    "energy_wh": "Energy used",
    "esc_temperature": "ESC temperature",
    "motor_temperature": "Motor temperature",
    "pack_temperature": "Pack temperature",
    "erpm": "eRPM",
    "rpm": "Motor RPM",
    "wheel_rpm": "Wheel RPM",
    "speed": "Speed",
    "throttle": "Throttle",
    "duty_cycle": "Duty cycle",
    "bec_voltage": "BEC voltage",
    "bec_current": "BEC current",
    "capacitor_temperature": "Capacitor temperature",
    "cell_voltage_rest": "Cell voltage at rest",
    "cell_voltage_spread": "Cell spread",
    "cell_voltage_spread_rest": "Cell spread at rest",
    "voltage_sag": "Voltage sag",
    "distance": "Distance",
    "energy_per_km": "Energy per km",
    "remaining": "Charge remaining",
    "internal_resistance": "Internal resistance",
    "cell_count": "Cell count",
}

HUB_SENSOR_NAMES: dict[str, str] = {
    "messages_per_s": "Messages per second",
    "readings_stored": "Readings stored",
    "rejected_total": "Messages rejected",
    "alerts_firing": "Alerts firing",
    "store_size": "Store size",
}

# Words of rule ids and metric names that are spelt differently in prose.
_WORDS = {
    "co2": "CO2", "voc": "VOC", "nox": "NOx", "aqi": "AQI", "esc": "ESC", "bec": "BEC",
    "pm1": "PM1", "pm10": "PM10", "rc": "", "air": "", "us": "(US)", "lipo": "LiPo",
}  # fmt: skip


def sensor_name(metric: str) -> str:
    return SENSOR_NAMES.get(metric) or humanize(metric)


def humanize(identifier: str) -> str:
    """`air_pm2_5_aqi_unhealthy` -> "PM2.5 AQI unhealthy" (pack prefixes dropped)."""
    text = re.sub(r"pm2_5", "PM2.5", identifier)
    words = [_WORDS.get(w, w) for w in text.split("_")]
    words = [w for w in words if w]
    if not words:
        return identifier
    first = words[0]
    if first.islower():
        words[0] = first[:1].upper() + first[1:]
    return " ".join(words)

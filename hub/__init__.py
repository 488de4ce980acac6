"""Telemetry hub: ESPHome air-quality nodes and RC ESC/LiPo telemetry into one store."""

__version__ = "0.1.0"

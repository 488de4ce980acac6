"""Fixtures for the firmware tests: the real ESPHome and a running `host` build."""

from tests.esphome_host import (
    esphome_bin,
    hub_test_node,
    hub_test_node_program,
    rc_bridge_host_program,
)

__all__ = ["esphome_bin", "hub_test_node", "hub_test_node_program", "rc_bridge_host_program"]

"""A broker that says "session taken over" (MQTT 5 DISCONNECT 0x8E) is counted and logged."""

from __future__ import annotations

import logging

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from hub.bus.mqtt import MqttConnection
from hub.config import BrokerConfig


def test_a_taken_over_session_is_counted_and_logged_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = MqttConnection(
        BrokerConfig(url="mqtt://127.0.0.1:1"), ["x/#"], client_id="hub-here"
    )
    flags = paho.DisconnectFlags(is_disconnect_packet_from_server=True)
    with caplog.at_level(logging.WARNING):
        connection._on_disconnect(
            connection._client,
            None,
            flags,
            ReasonCode(PacketTypes.DISCONNECT, identifier=0x8E),
            None,
        )
        connection._on_disconnect(
            connection._client,
            None,
            flags,
            ReasonCode(PacketTypes.DISCONNECT, identifier=0x80),
            None,
        )
    assert connection.stats.taken_over == 1 and connection.stats.disconnects == 2
    assert "session taken over" in connection.stats.last_error
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "'hub-here'" in errors[0].getMessage()

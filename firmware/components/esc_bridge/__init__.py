"""esc_bridge: forward an ESC telemetry UART to the hub as raw-byte lines (esc-telemetry §5).

The bridge stays dumb on purpose: it cuts the byte stream into chunks at idle gaps and sends
them as JSON Lines, `{"v":1,"t_us":...,"seq":...,"src":"esc0","proto":"kiss","raw":"2306..."}`;
the hub's decoders do the framing and CRC checks, so fixing a decoder needs no reflashing.
Lines are batched and handed to `on_lines` (variable `lines`: one or more `\\n`-terminated
lines), which a node wires to `mqtt.publish`.
"""

import esphome.codegen as cg
import esphome.config_validation as cv
from esphome import automation
from esphome.components import uart
from esphome.const import CONF_ID, CONF_PROTOCOL, CONF_SOURCE, CONF_TRIGGER_ID

DEPENDENCIES = ["uart"]

CONF_IDLE_GAP = "idle_gap"
CONF_MAX_CHUNK = "max_chunk"
CONF_FLUSH_INTERVAL = "flush_interval"
CONF_MAX_PAYLOAD = "max_payload"
CONF_STATS_INTERVAL = "stats_interval"
CONF_ON_LINES = "on_lines"

# The hub's protocol names (hub/sources/serial/settings.py) plus the short aliases it accepts.
PROTOCOLS = [
    "kiss",
    "blheli32",
    "am32",
    "hobbywing-v3",
    "hobbywing-v4",
    "hobbywing-foc",
    "hobbywing-v5",
    "hw3",
    "hw4",
    "hwfoc",
    "hw5",
    "vesc",
]

esc_bridge_ns = cg.esphome_ns.namespace("esc_bridge")
EscBridge = esc_bridge_ns.class_("EscBridge", cg.Component, uart.UARTDevice)
LinesTrigger = esc_bridge_ns.class_("LinesTrigger", automation.Trigger.template(cg.std_string))


def _source_name(value):
    """A source name goes into JSON unescaped, so keep it to safe characters."""
    value = cv.string_strict(value)
    if not value or len(value) > 24:
        raise cv.Invalid("source must be 1 to 24 characters")
    for char in value:
        if not (char.isascii() and (char.isalnum() or char in "_-")):
            raise cv.Invalid(f"source may hold only a-z, 0-9, '_' and '-', not {char!r}")
    return value


CONFIG_SCHEMA = (
    cv.Schema(
        {
            cv.GenerateID(): cv.declare_id(EscBridge),
            cv.Optional(CONF_SOURCE, default="esc0"): _source_name,
            cv.Required(CONF_PROTOCOL): cv.one_of(*PROTOCOLS, lower=True),
            # No byte for this long ends a chunk (a frame gap). At 19200 baud one byte takes
            # 0.52 ms, at 115200 0.087 ms; ESC frames are 10-50 ms apart.
            cv.Optional(CONF_IDLE_GAP, default="3ms"): cv.All(
                cv.positive_time_period_microseconds,
                cv.Range(min=cv.TimePeriod(microseconds=200)),
            ),
            cv.Optional(CONF_MAX_CHUNK, default=64): cv.int_range(min=8, max=256),
            cv.Optional(CONF_FLUSH_INTERVAL, default="100ms"): cv.positive_time_period_milliseconds,
            cv.Optional(CONF_MAX_PAYLOAD, default=1024): cv.int_range(min=128, max=8192),
            cv.Optional(CONF_STATS_INTERVAL, default="10s"): cv.positive_time_period_milliseconds,
            cv.Optional(CONF_ON_LINES): automation.validate_automation(
                {cv.GenerateID(CONF_TRIGGER_ID): cv.declare_id(LinesTrigger)}
            ),
        }
    )
    .extend(cv.COMPONENT_SCHEMA)
    .extend(uart.UART_DEVICE_SCHEMA)
)


async def to_code(config):
    var = cg.new_Pvariable(config[CONF_ID])
    await cg.register_component(var, config)
    await uart.register_uart_device(var, config)
    cg.add(var.set_source(config[CONF_SOURCE]))
    cg.add(var.set_protocol(config[CONF_PROTOCOL]))
    cg.add(var.set_idle_gap_us(config[CONF_IDLE_GAP].total_microseconds))
    cg.add(var.set_max_chunk(config[CONF_MAX_CHUNK]))
    cg.add(var.set_flush_interval_ms(config[CONF_FLUSH_INTERVAL].total_milliseconds))
    cg.add(var.set_max_payload(config[CONF_MAX_PAYLOAD]))
    cg.add(var.set_stats_interval_ms(config[CONF_STATS_INTERVAL].total_milliseconds))
    for conf in config.get(CONF_ON_LINES, []):
        trigger = cg.new_Pvariable(conf[CONF_TRIGGER_ID])
        cg.add(var.add_lines_trigger(trigger))
        await automation.build_automation(trigger, [(cg.std_string, "lines")], conf)

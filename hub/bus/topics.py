"""MQTT topic rules (pure): filter matching and validation, as the MQTT spec defines them."""

from __future__ import annotations


def valid_filter(topic_filter: str) -> str | None:
    """None when `topic_filter` is a valid subscription filter, else why not."""
    if not topic_filter:
        return "a topic filter cannot be empty"
    if len(topic_filter.encode()) > 65535:
        return "a topic filter is at most 65535 bytes"
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return "'#' must be a whole level and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


def matches(topic_filter: str, topic: str) -> bool:
    """True when `topic` matches `topic_filter` (with + and # wildcards)."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for index, level in enumerate(f_levels):
        if level == "#":
            return True
        if index >= len(t_levels):
            return False
        if level != "+" and level != t_levels[index]:
            return False
        if level == "+" and index == 0 and t_levels[0].startswith("$"):
            return False
    return len(f_levels) == len(t_levels)

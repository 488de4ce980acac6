"""Mosquitto password hashes and ACL text: vectors from mosquitto_passwd 2.0.11 itself."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.provision import mosquitto_auth as auth
from hub.provision.devices import device_acl, hub_acl
from hub.provision.managed_files import BEGIN, END, ManagedFileError, join_managed, split_managed

REPO = Path(__file__).resolve().parents[2]

# `mosquitto_passwd -c -b pw alice secret` (mosquitto 2.0.11) wrote this line.
VECTOR_LINE = (
    "alice:$7$101$Lvqnnh9rZk6BT8NL$QoKd4uu7e1bzf0wnM/8K6p5F0BfccvFw9Z/GI/lAfP0Qe9uzbvPh/"
    "AUamq62y1QlnMOZIsrW9HknzUAQihawKw=="
)


def test_hash_matches_mosquitto_passwd_vector() -> None:
    _, hashed = VECTOR_LINE.split(":", 1)
    salt = base64.b64decode(hashed.split("$")[3])
    assert len(salt) == auth.SALT_BYTES
    assert auth.hash_password("secret", salt=salt) == hashed
    assert auth.verify_password("secret", hashed)
    assert not auth.verify_password("Secret", hashed)


def test_new_hash_has_mosquitto_shape() -> None:
    hashed = auth.hash_password("pw")
    empty, seven, iterations, salt, digest = hashed.split("$")
    assert (empty, seven, iterations) == ("", "7", "101")
    assert len(base64.b64decode(salt)) == 12
    assert len(base64.b64decode(digest)) == 64
    assert auth.hash_password("pw") != hashed  # a fresh salt every time


def test_verifies_what_the_real_mosquitto_passwd_writes(tmp_path: Path) -> None:
    binary = shutil.which("mosquitto_passwd")
    if binary is None:
        pytest.fail("mosquitto_passwd is not installed (apt-get install mosquitto)")
    pw = tmp_path / "pw"
    subprocess.run([binary, "-c", "-b", str(pw), "dev", "s3cret:with$odd chars"], check=True)
    entries = auth.parse_passwd(pw.read_text())
    assert auth.verify_password("s3cret:with$odd chars", entries["dev"])
    assert not auth.verify_password("s3cret", entries["dev"])


def test_older_sha512_format_verifies() -> None:
    import hashlib

    salt = b"0123456789ab"
    digest = hashlib.sha512(b"pw" + salt).digest()
    hashed = f"$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    assert auth.verify_password("pw", hashed)
    assert not auth.verify_password("px", hashed)


@pytest.mark.parametrize(
    "hashed",
    ["", "plain", "$7$101$", "$7$x$AAAA$AAAA", "$7$101$!!!$AAAA", "$7$0$AAAA$AAAA", "$9$1$2$3"],
)
def test_malformed_hash_is_a_mismatch_not_a_crash(hashed: str) -> None:
    assert auth.verify_password("pw", hashed) is False


def test_passwd_keeps_user_entries_and_unchanged_hashes() -> None:
    own = "# my own users\nalice:$7$101$AAAA$BBBB\n"
    first = auth.passwd_text(own, {"hub": "h", "dev-a": "a"})
    assert first.startswith(own)
    assert auth.parse_passwd(first)["alice"] == "$7$101$AAAA$BBBB"
    # Same passwords: the same file (no new salts); a changed one: only that line changes.
    assert auth.passwd_text(first, {"hub": "h", "dev-a": "a"}) == first
    second = auth.passwd_text(first, {"hub": "h", "dev-a": "new"})
    old, new = auth.parse_passwd(first), auth.parse_passwd(second)
    assert old["hub"] == new["hub"] and old["dev-a"] != new["dev-a"]
    assert auth.verify_password("new", new["dev-a"])
    # Removal drops the line and nothing else.
    third = auth.passwd_text(second, {"hub": "h"})
    assert set(auth.parse_passwd(third)) == {"alice", "hub"}


def test_passwd_refuses_to_shadow_a_user_entry() -> None:
    with pytest.raises(ManagedFileError, match="dev-a"):
        auth.passwd_text("dev-a:$7$101$AAAA$BBBB\n", {"dev-a": "x"})


@pytest.mark.parametrize("name", ["", "a:b", "a b", "a/b", "+", "#", "x" * 65])
def test_bad_usernames_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        auth.passwd_text("", {name: "x"})


def test_managed_block_round_trip_keeps_user_text() -> None:
    user = "wifi_ssid: home\n# comment\n"
    text = join_managed(user, "a: 1\n")
    assert split_managed(text) == (user, "a: 1\n")
    # The user added lines after the block: they are kept (moved above it on rewrite).
    later = text + "wifi_password: x\n"
    own, body = split_managed(later)
    assert own == user + "wifi_password: x\n" and body == "a: 1\n"


@pytest.mark.parametrize(
    "text",
    [f"{BEGIN}\nx\n", f"x\n{END}\n", f"{END}\n{BEGIN}\n", f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n"],
)
def test_broken_markers_are_refused(text: str) -> None:
    with pytest.raises(ManagedFileError):
        split_managed(text)


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=200))
def test_any_user_text_survives(user: str) -> None:
    if BEGIN in user or END in user:
        return
    own, body = split_managed(join_managed(user, "x\n"))
    assert body == "x\n"
    assert own == (user if user == "" or user.endswith("\n") else user + "\n")


def test_acl_render_and_parse() -> None:
    users = [hub_acl("hub"), device_acl("airq-a", "airq"), device_acl("rc-b", "rc-bridge")]
    text = auth.acl_text("user admin\ntopic readwrite #\n", users)
    parsed = auth.parse_acl_users(text)
    assert parsed["admin"] == (auth.AclRule("readwrite", "#"),)
    assert parsed["hub"] == hub_acl("hub").rules
    assert parsed["rc-b"] == device_acl("rc-b", "rc-bridge").rules
    assert auth.AclRule("write", "hub/readings/rc-b") in parsed["rc-b"]
    assert not any("hub/readings" in r.topic for r in parsed["airq-a"])
    assert text.index("user admin") < text.index(BEGIN)  # own rules stay out of hub users' blocks


def test_acl_refuses_to_shadow_a_user_block() -> None:
    with pytest.raises(ManagedFileError, match="hub"):
        auth.acl_text("user hub\ntopic read #\n", [hub_acl("hub")])


def test_acl_template_documents_what_is_generated() -> None:
    """deploy/mosquitto/acl.template is the reference of the rules `hub device` writes."""
    template = (REPO / "deploy" / "mosquitto" / "acl.template").read_text()
    parsed = auth.parse_acl_users(template)
    assert parsed["HUB_USER"] == hub_acl("HUB_USER").rules
    assert parsed["AIRQ_NODE"] == device_acl("AIRQ_NODE", "airq").rules
    assert parsed["BRIDGE_NODE"] == device_acl("BRIDGE_NODE", "rc-bridge").rules


def test_hub_acl_is_exactly_what_the_hub_uses() -> None:
    """The hub subscribes to these filters and publishes hub/# and homeassistant/#: no more."""
    assert [(r.access, r.topic) for r in hub_acl("hub").rules] == [
        ("read", "+/sensor/+/state"),
        ("read", "+/binary_sensor/+/state"),
        ("read", "+/text_sensor/+/state"),
        ("read", "+/status"),
        ("read", "homeassistant/+/+/+/config"),
        ("read", "hub/readings/#"),
        ("read", "hub/bridge/+"),
        ("read", "hub/devices/+/availability"),
        ("write", "hub/#"),
        ("write", "homeassistant/#"),
    ]

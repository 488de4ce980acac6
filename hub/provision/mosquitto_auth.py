"""Mosquitto 2.0 password and ACL files, written as Mosquitto itself reads them.

Password file: one `username:hash` per line. The hash is what `mosquitto_passwd` 2.0 writes:
`$7$<iterations>$<salt>$<hash>` with PBKDF2-HMAC-SHA512, 101 iterations, a 12-byte random salt,
salt and 64-byte hash in standard base64. Mosquitto skips `#` comment lines and blank lines.

ACL file: a `user <name>` line, then `topic read|write|readwrite|deny <filter>` lines that
apply to that user until the next `user` line. Everything not granted is denied.

Both files keep a user's own entries: the hub only rewrites its managed block
(`hub.provision.managed_files`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from hub.provision.managed_files import ManagedFileError, join_managed, split_managed

PBKDF2_ITERATIONS = 101
SALT_BYTES = 12

Access = Literal["read", "write", "readwrite", "deny"]
ACCESS: tuple[Access, ...] = ("read", "write", "readwrite", "deny")

# A user name that is also a safe topic level: no ':' (password file), no whitespace (ACL
# file), no '+', '#' or '/' (topic patterns).
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def hash_password(
    password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """The `$7$` string Mosquitto 2.0 checks a password against."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Does `password` match a Mosquitto hash (`$7$` PBKDF2-SHA512 or the older `$6$` SHA512)?"""
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[:2] == ["", "7"]:
            iterations = int(parts[2])
            salt, expected = base64.b64decode(parts[3], validate=True), base64.b64decode(parts[4])
            if not 1 <= iterations <= 10_000_000:
                return False
            actual = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
        elif len(parts) == 4 and parts[:2] == ["", "6"]:
            salt, expected = base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3])
            actual = hashlib.sha512(password.encode("utf-8") + salt).digest()
        else:
            return False
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


def check_username(name: str) -> str:
    if not USERNAME_RE.match(name):
        raise ValueError(
            f"MQTT user name {name!r} must be 1-64 ASCII letters, digits, '_', '-' or '.'"
        )
    return name


# --- password file ------------------------------------------------------------------------


def parse_passwd(text: str) -> dict[str, str]:
    """username -> hash for every entry line; comments and blank lines skipped."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        user, _, hashed = stripped.partition(":")
        entries[user] = hashed
    return entries


def passwd_text(
    existing: str,
    passwords: Mapping[str, str],
    *,
    hasher: Callable[[str], str] = hash_password,
) -> str:
    """The password file with its hub-managed block holding exactly `passwords` (user -> clear).

    An entry whose current hash still matches its password is kept as it is, so an unchanged
    file is not rewritten with fresh salts on every command.
    """
    user_text, body = split_managed(existing, what="password file")
    own = parse_passwd(user_text)
    clash = sorted(set(own) & set(passwords))
    if clash:
        raise ManagedFileError(
            f"password file already has user(s) {', '.join(clash)} outside the hub-managed block: "
            "remove them there or pick another name"
        )
    current = parse_passwd(body)
    lines = []
    for user in sorted(passwords):
        check_username(user)
        old = current.get(user)
        hashed = old if old and verify_password(passwords[user], old) else hasher(passwords[user])
        lines.append(f"{user}:{hashed}\n")
    return join_managed(user_text, "".join(lines))


# --- ACL file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AclRule:
    access: Access
    topic: str

    def __post_init__(self) -> None:
        if self.access not in ACCESS:
            raise ValueError(f"ACL access {self.access!r} is not one of {', '.join(ACCESS)}")
        if not self.topic or any(c.isspace() for c in self.topic):
            raise ValueError(f"ACL topic {self.topic!r} must be non-empty without spaces")

    def line(self) -> str:
        return f"topic {self.access} {self.topic}"


@dataclass(frozen=True)
class AclUser:
    username: str
    rules: tuple[AclRule, ...]
    comment: str = ""

    def lines(self) -> list[str]:
        check_username(self.username)
        head = [f"# {self.comment}"] if self.comment else []
        return [*head, f"user {self.username}", *(rule.line() for rule in self.rules)]


def parse_acl_users(text: str) -> dict[str, tuple[AclRule, ...]]:
    """username -> its `topic` rules, from an ACL file's text (patterns and comments skipped)."""
    users: dict[str, list[AclRule]] = {}
    current: list[AclRule] | None = None
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user" and len(words) == 2:
            current = users.setdefault(words[1], [])
        elif words[0] == "topic" and current is not None:
            if len(words) == 2:  # "topic <filter>" means readwrite
                current.append(AclRule("readwrite", words[1]))
            elif len(words) == 3 and words[1] in ACCESS:
                current.append(AclRule(words[1], words[2]))
    return {user: tuple(rules) for user, rules in users.items()}


def acl_text(existing: str, users: Iterable[AclUser]) -> str:
    """The ACL file with its hub-managed block holding exactly `users`."""
    user_text, _ = split_managed(existing, what="ACL file")
    users = list(users)
    clash = sorted(set(parse_acl_users(user_text)) & {u.username for u in users})
    if clash:
        raise ManagedFileError(
            f"ACL file already has rules for user(s) {', '.join(clash)} outside the hub-managed "
            "block: remove them there or pick another name"
        )
    blocks = ["\n".join(user.lines()) + "\n" for user in users]
    return join_managed(user_text, "\n".join(blocks))

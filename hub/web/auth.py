"""The API token: generated on first run, shown once on the terminal, stored only as a digest.

The token is 32 random bytes (256 bits), so a plain SHA-256 digest at rest is as good as a slow
password hash: nobody can search that space, and a copy of the data directory still does not
give the token away. Checking it costs a microsecond, so a stranger sending wrong tokens
costs the hub next to nothing (with scrypt, 600 of them took the hub to 784 MB and its health
check to 15 s: issue #14). Requests carry the token as `Authorization: Bearer <token>`; the
live WebSocket, which a browser cannot give headers, may carry it as `?token=`.

Token files written by earlier versions hold a salted scrypt hash. Such a file still works:
the first correct token is checked with scrypt, one check at a time (so a flood of wrong ones
costs at most one scrypt's memory), and the file is then rewritten with the SHA-256 digest.
`hub web token --reset` replaces the token at any time.

`FailureLimiter` counts wrong tokens per client address; past the limit the address gets 429
until its window has passed.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

SCHEME = "sha256"
# Longer than any token we make (43 characters); anything bigger is refused unread.
MAX_TOKEN_CHARS = 512


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def write_token_file(path: Path, token: str) -> None:
    """Store the digest of `token` (mode 0600), replacing any earlier one atomically."""
    write_digest_file(path, digest(token))


def write_digest_file(path: Path, token_digest: bytes) -> None:
    record = {"scheme": SCHEME, "hash": token_digest.hex()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    tmp.replace(path)


@dataclass(frozen=True, slots=True)
class _Record:
    scheme: str  # "sha256", or "scrypt" for files of earlier versions
    digest: bytes
    mtime_ns: int
    salt: bytes = b""
    n: int = 0
    r: int = 0
    p: int = 0


class TokenStore:
    """Checks presented tokens against the stored digest; creates the token when there is none."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._record: _Record | None = None
        self._lock = threading.Lock()
        # One legacy scrypt check at a time, whoever asks: its memory is bounded to one.
        self._scrypt = threading.RLock()
        self.error: str | None = None

    def ensure(self) -> str | None:
        """Create a token if none is stored; returns it (to be shown once) or None."""
        if self.path.exists():
            record = self._load()
            if record is not None and record.scheme == "scrypt":
                log.warning(
                    "The API token file %s is in the old scrypt format: it is upgraded to a "
                    "SHA-256 digest the first time the token is used (or run "
                    "'hub web token --reset' for a new token)",
                    self.path,
                )
            return None
        token = new_token()
        write_token_file(self.path, token)
        self._load()
        return token

    @property
    def legacy(self) -> bool:
        """True while the stored token is still a scrypt hash (checks cost milliseconds)."""
        record = self._load()
        return record is not None and record.scheme == "scrypt"

    def _load(self) -> _Record | None:
        try:
            stat = self.path.stat()
        except OSError:
            self._record = None
            self.error = f"no API token file at {self.path}"
            return None
        current = self._record
        if current is not None and current.mtime_ns == stat.st_mtime_ns:
            return current
        try:
            data = orjson.loads(self.path.read_bytes())
            scheme = data.get("scheme", "scrypt")
            if scheme == SCHEME:
                record = _Record(SCHEME, bytes.fromhex(data["hash"]), stat.st_mtime_ns)
            elif scheme == "scrypt":
                record = _Record(
                    "scrypt",
                    bytes.fromhex(data["hash"]),
                    stat.st_mtime_ns,
                    bytes.fromhex(data["salt"]),
                    int(data["n"]),
                    int(data["r"]),
                    int(data["p"]),
                )
            else:
                raise ValueError(f"unknown scheme {scheme!r}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            if self.error is None or str(exc) not in self.error:
                log.error(
                    "Cannot read the API token file %s: %s; every token is refused "
                    "('hub web token --reset' writes a new one)",
                    self.path,
                    exc,
                )
            self.error = f"unreadable API token file {self.path}: {exc}"
            self._record = None
            return None
        with self._lock:
            self._record = record
            self.error = None
        return record

    def check(self, presented: str | None) -> bool:
        """True when `presented` is the token. Microseconds, except once for a legacy file."""
        if not presented or len(presented) > MAX_TOKEN_CHARS:
            return False
        record = self._load()
        if record is None:
            return False
        if record.scheme == SCHEME:
            return hmac.compare_digest(digest(presented), record.digest)
        return self._check_legacy(presented, record)

    def _check_legacy(self, presented: str, record: _Record) -> bool:
        with self._scrypt:
            if self._load() is not record:  # upgraded (or reset) while we waited
                return self.check(presented)
            hashed = hashlib.scrypt(
                presented.encode(), salt=record.salt, n=record.n, r=record.r, p=record.p,
                dklen=len(record.digest), maxmem=64 << 20,
            )  # fmt: skip
            if not hmac.compare_digest(hashed, record.digest):
                return False
            try:
                write_digest_file(self.path, digest(presented))
                log.info("Upgraded the API token file %s to a SHA-256 digest", self.path)
            except OSError as exc:
                log.warning("Could not upgrade the API token file %s: %s", self.path, exc)
            self._load()
            return True


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


class FailureLimiter:
    """Wrong tokens per client address: after `limit` within `window` seconds, the address is
    refused (429) until the window of its first counted failure has passed.

    Memory is bounded: at most `max_addresses` addresses are tracked, the least recently
    failing one is forgotten first. Only wrong tokens count; a request without any token
    guesses nothing and costs nothing, so a dashboard opened before the token was entered
    does not lock its own browser out.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self.clock = clock
        # address -> (window start, failures in it)
        self._failures: collections.OrderedDict[str, tuple[float, int]] = collections.OrderedDict()
        self.refused = 0  # requests answered 429
        self.failures = 0  # wrong tokens seen

    def retry_after(self, address: str) -> int:
        """Seconds until `address` may try again; 0 when it may now."""
        entry = self._failures.get(address)
        if entry is None:
            return 0
        start, count = entry
        left = start + self.window - self.clock()
        if left <= 0:
            del self._failures[address]
            return 0
        return math.ceil(left) if count >= self.limit else 0

    def refuse(self) -> None:
        self.refused += 1

    def failed(self, address: str) -> None:
        self.failures += 1
        now = self.clock()
        start, count = self._failures.pop(address, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        self._failures[address] = (start, count + 1)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        if count + 1 == self.limit:
            log.warning(
                "%d wrong API tokens from %s within %.0f s: refusing it (429) for the rest "
                "of that time",
                self.limit,
                address,
                self.window,
            )

    def status(self) -> dict[str, int]:
        blocked = sum(1 for address in list(self._failures) if self.retry_after(address))
        return {"wrong_tokens": self.failures, "refused_429": self.refused, "blocked": blocked}

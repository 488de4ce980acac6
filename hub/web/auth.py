"""The API token: generated on first run, shown once in the log, stored only as a hash.

The file holds a random salt and the scrypt hash of the token, nothing else, so a copy of the
data directory does not give the token away. Checking scrypt costs tens of milliseconds, so a
token that passed once is remembered (by its SHA-256, in memory) until the file changes.
Requests carry the token as `Authorization: Bearer <token>`; the live WebSocket, which a
browser cannot give headers, may carry it as `?token=`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

# scrypt cost: about 16 MiB and 30-60 ms per check on a small machine; interactive-login grade.
_N, _R, _P = 2**14, 8, 1
_DKLEN = 32


def hash_token(token: str, salt: bytes, n: int = _N, r: int = _R, p: int = _P) -> bytes:
    return hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, dklen=_DKLEN, maxmem=64 << 20)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def write_token_file(path: Path, token: str) -> None:
    """Store the hash of `token` (mode 0600), replacing any earlier one."""
    salt = secrets.token_bytes(16)
    record = {
        "scheme": "scrypt",
        "n": _N,
        "r": _R,
        "p": _P,
        "salt": salt.hex(),
        "hash": hash_token(token, salt).hex(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    tmp.replace(path)


@dataclass(frozen=True, slots=True)
class _Record:
    salt: bytes
    digest: bytes
    n: int
    r: int
    p: int
    mtime_ns: int


class TokenStore:
    """Checks presented tokens against the stored hash; creates the token when there is none."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._record: _Record | None = None
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    def ensure(self) -> str | None:
        """Create a token if none is stored; returns it (to be shown once) or None."""
        if self.path.exists():
            self._load()
            return None
        token = new_token()
        write_token_file(self.path, token)
        self._load()
        return token

    def _load(self) -> _Record | None:
        try:
            stat = self.path.stat()
        except OSError:
            self._record = None
            return None
        if self._record is not None and self._record.mtime_ns == stat.st_mtime_ns:
            return self._record
        try:
            data = orjson.loads(self.path.read_bytes())
            record = _Record(
                bytes.fromhex(data["salt"]),
                bytes.fromhex(data["hash"]),
                int(data["n"]),
                int(data["r"]),
                int(data["p"]),
                stat.st_mtime_ns,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error(
                "Cannot read the API token file %s: %s; every token is refused", self.path, exc
            )
            self._record = None
            return None
        with self._lock:
            self._record = record
            self._verified.clear()  # a reset token invalidates what passed before
        return record

    def check(self, presented: str | None) -> bool:
        if not presented or len(presented) > 512:
            return False
        record = self._load()
        if record is None:
            return False
        fingerprint = hashlib.sha256(presented.encode()).digest()
        with self._lock:
            if fingerprint in self._verified:
                return True
        digest = hash_token(presented, record.salt, record.n, record.r, record.p)
        if not hmac.compare_digest(digest, record.digest):
            return False
        with self._lock:
            if len(self._verified) > 64:
                self._verified.clear()
            self._verified.add(fingerprint)
        return True


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None

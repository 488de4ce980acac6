"""Files the hub shares with their owner: a hub-managed block inside, atomic rewrites.

The firmware secrets file, Mosquitto's password file and its ACL file may hold a user's own
entries too (Wi-Fi credentials, a human MQTT user, a bridge). The hub only ever rewrites the
lines between its BEGIN and END markers and keeps everything else verbatim, so `hub device`
and a text editor can share one file. Pure text functions here, plus one atomic writer.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

BEGIN = "# BEGIN hub-managed entries: written by `hub device`; put your own entries above"
END = "# END hub-managed entries"


class ManagedFileError(ValueError):
    """A shared file cannot be updated without losing or contradicting a user's entries."""


def split_managed(text: str, *, what: str = "file") -> tuple[str, str]:
    """(the user's own text, the body of the hub-managed block) of a shared file's text."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\r\n") == END]
    if not starts and not ends:
        return text, ""
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        # Guessing where the block ends could delete the user's lines: refuse instead.
        raise ManagedFileError(
            f"{what} has {len(starts)} BEGIN and {len(ends)} END hub-managed markers; "
            "expected one of each, in that order: fix it by hand"
        )
    start, end = starts[0], ends[0]
    user = "".join(lines[:start] + lines[end + 1 :])
    return user, "".join(lines[start + 1 : end])


def join_managed(user_text: str, body: str) -> str:
    """The user's text, then the hub-managed block at the end.

    At the end because in an ACL file `topic` lines belong to the `user` line above them: the
    hub's block opens with its own `user` line, so it cannot capture the user's rules, and the
    user's text cannot extend the hub's last user unless it is written after the block.
    """
    head = user_text
    if head and not head.endswith("\n"):
        head += "\n"
    if body and not body.endswith("\n"):
        body += "\n"
    return f"{head}{BEGIN}\n{body}{END}\n"


def write_atomic(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Replace `path` in one step: a reader sees the old file or the new one, never half.

    A new file gets `mode`; an existing one keeps its mode and group (so a file made readable
    to the `mosquitto` group stays readable after the hub rewrites it). The mode is set before
    any byte is written, so a secret is never readable by others, not even briefly.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    gid: int | None = None
    try:
        st = path.stat()
        mode, gid = st.st_mode & 0o777, st.st_gid
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        if gid is not None and gid != os.getegid():
            with contextlib.suppress(OSError):  # only the owner of the group may do it
                os.fchown(fd, -1, gid)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # durability of the rename itself
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_text(path: Path) -> str:
    """The file's text, or "" when it does not exist yet."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""

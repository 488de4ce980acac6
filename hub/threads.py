"""OS-level names for the hub's threads, so `top -H`, py-spy and /proc show who spends the CPU."""

from __future__ import annotations

import contextlib
import threading


def name_os_thread(name: str) -> None:
    """Name the calling thread in the kernel (Linux; 15 characters). Python 3.11 names threads
    only for itself, so every thread of `hub run` showed up as "python" in /proc/<pid>/task,
    and bench/ingest.py could not tell the store thread from paho's."""
    with (
        contextlib.suppress(OSError),
        open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm,
    ):
        comm.write(name[:15])

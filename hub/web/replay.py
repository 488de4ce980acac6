"""Replaying dead letters: decode the kept payload again and store what now decodes.

Runs in the ingest core's store thread (it uses the writer Store and the Router, both owned by
that thread). A message is replayed with its original receive time, so a replay after a
mapping fix lands where the data belongs, and replaying twice stores nothing twice (samples are
keyed by series and time). Only MQTT dead letters can be decoded again; others are reported.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from hub.bus.mqtt import Message
from hub.bus.reject import Rejected
from hub.ingest import Committed
from hub.store.sqlite import Batch, Store, mark_replayed

if TYPE_CHECKING:
    from hub.store.postgres import PostgresStore

log = logging.getLogger(__name__)


def replay(
    store: Store | PostgresStore,
    router: Any,
    ids: list[int],
    reason: str | None,
    limit: int,
    now_ms: int,
) -> tuple[dict[str, Any], Committed | None]:
    if not ids and reason:
        ids = [row["id"] for row in store.dead_letters(limit, reason) if row["replayed_ts"] is None]
    batch = Batch()
    replayed: list[int] = []
    failed: list[dict[str, Any]] = []
    for dead_letter_id in ids:
        found = store.dead_letter(dead_letter_id)
        if found is None:
            failed.append(
                {"id": dead_letter_id, "reason": "not_found", "detail": "no such dead letter"}
            )
            continue
        info, payload = found
        if info["source"] != "mqtt" or info["topic"] is None or payload is None:
            failed.append(
                {
                    "id": dead_letter_id,
                    "reason": "not_replayable",
                    "detail": f"dead letters from {info['source']!r} are not MQTT messages to decode again",
                }
            )
            continue
        if info.get("payload_truncated"):
            failed.append(
                {
                    "id": dead_letter_id,
                    "reason": "not_replayable",
                    "detail": f"only the first {len(payload)} of {info['payload_bytes']} bytes were kept",
                }
            )
            continue
        message = Message(info["topic"], payload, 0, 0, False, False, int(info["received_ts"]))
        try:
            decoded = router.decode(message, now_ms)
        except Rejected as exc:
            failed.append({"id": dead_letter_id, "reason": exc.reason, "detail": exc.detail})
            continue
        except Exception as exc:  # a codec bug must not fail the whole replay
            log.exception("Replaying dead letter %d failed", dead_letter_id)
            failed.append({"id": dead_letter_id, "reason": "internal_error", "detail": repr(exc)})
            continue
        batch.add(decoded)
        replayed.append(dead_letter_id)
    committed = None
    if replayed:
        # The readings and the mark in one transaction: a replay is never half done.
        if isinstance(store, Store):
            batch.writes.append(lambda conn: mark_replayed(conn, replayed, now_ms))
            store.commit(batch)
        else:
            store.commit_replayed(batch, replayed, now_ms)
        committed = Committed(
            batch.readings, batch.events, batch.availability, time.time_ns() // 1_000_000
        )
        log.info("Replayed %d dead letters (%d readings)", len(replayed), len(batch.readings))
    outcome = {"replayed": len(replayed), "readings": len(batch.readings), "failed": failed}
    return outcome, committed

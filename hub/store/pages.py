"""A read-only reader of SQLite's file format, page by page, for recovering a damaged store.

It does what the `sqlite3` shell's `.recover` does where that is missing (Debian's build lacks
the sqlite_dbpage table): walk each table's b-tree from its root page, skip pages that do not
parse, and read the leaf pages that no intact parent points to any more (orphans) by matching
their rows to the table whose columns they fit. Format reference: https://sqlite.org/fileformat2.html
Pure: bytes in, rows out; every offset is bounds-checked, a bad page or cell is skipped.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

INTERIOR_INDEX, INTERIOR_TABLE, LEAF_INDEX, LEAF_TABLE = 2, 5, 10, 13
Value = int | float | str | bytes | None


class PageError(Exception):
    """A page or cell that does not parse."""


def varint(buf: bytes, at: int) -> tuple[int, int]:
    """(value, next offset) of the SQLite varint at `at`."""
    value = 0
    for i in range(9):
        if at + i >= len(buf):
            raise PageError("varint past the end")
        byte = buf[at + i]
        if i == 8:
            value = (value << 8) | byte
            return value - (1 << 64) if value >= 1 << 63 else value, at + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    raise PageError("bad varint")  # pragma: no cover


def decode_record(payload: bytes) -> list[Value]:
    """The column values of one record."""
    header_size, at = varint(payload, 0)
    if not 0 < header_size <= len(payload):
        raise PageError("bad record header")
    types = []
    while at < header_size:
        serial, at = varint(payload, at)
        types.append(serial)
    body = header_size
    values: list[Value] = []
    for serial in types:
        if serial == 0:
            values.append(None)
        elif 1 <= serial <= 6:
            width = (1, 2, 3, 4, 6, 8)[serial - 1]
            chunk = payload[body : body + width]
            if len(chunk) != width:
                raise PageError("record too short")
            values.append(int.from_bytes(chunk, "big", signed=True))
            body += width
        elif serial == 7:
            chunk = payload[body : body + 8]
            if len(chunk) != 8:
                raise PageError("record too short")
            values.append(struct.unpack(">d", chunk)[0])
            body += 8
        elif serial in (8, 9):
            values.append(serial - 8)
        elif serial >= 12:
            size = (serial - 12) // 2
            chunk = payload[body : body + size]
            if len(chunk) != size:
                raise PageError("record too short")
            values.append(bytes(chunk) if serial % 2 == 0 else chunk.decode("utf-8"))
            body += size
        else:
            raise PageError("reserved serial type")
    return values


@dataclass
class Database:
    data: bytes
    page_size: int
    usable: int
    pages: int = field(init=False)

    def __post_init__(self) -> None:
        self.pages = len(self.data) // self.page_size

    def page(self, number: int) -> tuple[bytes, int]:
        """(page bytes, offset of its b-tree header)."""
        if not 1 <= number <= self.pages:
            raise PageError(f"page {number} out of range")
        start = (number - 1) * self.page_size
        return self.data[start : start + self.page_size], 100 if number == 1 else 0

    def kind(self, number: int) -> int:
        buf, head = self.page(number)
        return buf[head]

    def _payload(self, buf: bytes, at: int, size: int, index: bool) -> bytes:
        usable = self.usable
        max_local = ((usable - 12) * 64 // 255 - 23) if index else usable - 35
        min_local = (usable - 12) * 32 // 255 - 23
        if size <= max_local:
            local = size
        else:
            k = min_local + (size - min_local) % (usable - 4)
            local = k if k <= max_local else min_local
        if at + local > len(buf) or size < 0:
            raise PageError("cell past the page")
        out = bytearray(buf[at : at + local])
        if local < size:
            if at + local + 4 > len(buf):
                raise PageError("overflow pointer past the page")
            (next_page,) = struct.unpack_from(">I", buf, at + local)
            seen = set()
            while len(out) < size:
                if next_page in seen or not 1 <= next_page <= self.pages:
                    raise PageError("bad overflow chain")
                seen.add(next_page)
                page, _ = self.page(next_page)
                (following,) = struct.unpack_from(">I", page, 0)
                out += page[4 : 4 + min(usable - 4, size - len(out))]
                next_page = following
        return bytes(out)

    def cells(self, number: int) -> tuple[int, list[int], int | None]:
        """(page kind, cell offsets, right-most child) of a b-tree page."""
        buf, head = self.page(number)
        kind = buf[head]
        if kind not in (INTERIOR_INDEX, INTERIOR_TABLE, LEAF_INDEX, LEAF_TABLE):
            raise PageError(f"page {number} is not a b-tree page")
        (count,) = struct.unpack_from(">H", buf, head + 3)
        interior = kind in (INTERIOR_INDEX, INTERIOR_TABLE)
        header = 12 if interior else 8
        right = struct.unpack_from(">I", buf, head + 8)[0] if interior else None
        pointers = head + header
        if pointers + 2 * count > len(buf):
            raise PageError("cell pointers past the page")
        offsets = [struct.unpack_from(">H", buf, pointers + 2 * i)[0] for i in range(count)]
        if any(not pointers + 2 * count <= o < len(buf) for o in offsets):
            raise PageError("cell offset out of the page")
        return kind, offsets, right

    def children(self, number: int) -> list[int]:
        kind, offsets, right = self.cells(number)
        if kind not in (INTERIOR_INDEX, INTERIOR_TABLE):
            return []
        buf, _ = self.page(number)
        out = [struct.unpack_from(">I", buf, o)[0] for o in offsets]
        if right:
            out.append(right)
        return out

    def leaf_rows(self, number: int) -> Iterator[tuple[int | None, list[Value]]]:
        """(rowid or None, values) of each row of a page; bad cells are skipped.

        Rows live in table leaves and in index pages of both kinds: an interior index cell
        holds a key of its own (a row of a WITHOUT ROWID table), not a copy."""
        kind, offsets, _ = self.cells(number)
        if kind == INTERIOR_TABLE:
            return
        buf, _ = self.page(number)
        for offset in offsets:
            try:
                at = offset + 4 if kind == INTERIOR_INDEX else offset
                size, at = varint(buf, at)
                rowid = None
                if kind == LEAF_TABLE:
                    rowid, at = varint(buf, at)
                yield rowid, decode_record(self._payload(buf, at, size, kind != LEAF_TABLE))
            except (PageError, UnicodeDecodeError, struct.error):
                continue

    def walk(self, root: int, seen: set[int]) -> tuple[list[int], bool]:
        """Pages holding rows reachable from `root` (leaves, and interior pages of index trees),
        and whether a page on the way did not parse."""
        leaves = []
        damaged = False
        stack = [root]
        while stack:
            number = stack.pop()
            if number in seen:
                continue
            if not 1 <= number <= self.pages:
                damaged = True  # a pointer past the end: a truncated file
                continue
            seen.add(number)
            try:
                kind = self.kind(number)
                if kind in (LEAF_INDEX, LEAF_TABLE):
                    self.cells(number)
                    leaves.append(number)
                elif kind in (INTERIOR_INDEX, INTERIOR_TABLE):
                    stack.extend(self.children(number))
                    if kind == INTERIOR_INDEX:
                        leaves.append(number)  # its cells are rows too
                else:
                    damaged = True
            except (PageError, struct.error):
                damaged = True
        return leaves, damaged

    def freelist(self) -> set[int]:
        """Pages on the freelist (deleted content: never recovered). Empty if unreadable."""
        if self.data[:16] != b"SQLite format 3\x00":
            return set()
        (trunk,) = struct.unpack_from(">I", self.data, 32)
        out: set[int] = set()
        while trunk and 1 <= trunk <= self.pages and trunk not in out:
            out.add(trunk)
            buf, _ = self.page(trunk)
            (following, count) = struct.unpack_from(">II", buf, 0)
            for i in range(min(count, (self.usable - 8) // 4)):
                out.add(struct.unpack_from(">I", buf, 8 + 4 * i)[0])
            trunk = following
        return out


def open_database(data: bytes, page_size: int | None = None) -> Database:
    """Read the page size and reserved bytes from the header (or use what the caller knows)."""
    size = page_size
    reserved = 0
    if data[:16] == b"SQLite format 3\x00":
        (raw,) = struct.unpack_from(">H", data, 16)
        size = 65536 if raw == 1 else raw
        reserved = data[20]
    if not size or size < 512 or size & (size - 1):
        size = 4096
    return Database(data, size, size - reserved)

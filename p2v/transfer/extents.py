"""Extents: what a disk holds where, and the edge cases of combining them.

Sources describe themselves as a list of extents (NBD block status, SEEK_DATA /
SEEK_HOLE). Servers answer in pieces of their own choosing: replies may be short,
may run past the range asked for, and neighbours often carry the same kind. Every
such edge case is handled here, in plain functions, so that the copy loop only
ever sees clean, sorted, merged extents that exactly cover the disk.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass


class Kind(enum.Enum):
    DATA = "data"  # must be read
    ZERO = "zero"  # reads as zeros; never read, zeroed on the target if needed
    SKIP = "skip"  # leave the target as it is (clean in a dirty bitmap)


@dataclass(frozen=True, slots=True)
class Extent:
    start: int
    length: int
    kind: Kind

    @property
    def end(self) -> int:
        return self.start + self.length


Range = tuple[int, int]  # (start, end), end exclusive


def merge(extents: Iterable[Extent]) -> Iterator[Extent]:
    """Join neighbours of the same kind; drop empty extents."""
    pending: Extent | None = None
    for ext in extents:
        if ext.length <= 0:
            continue
        if pending is not None and pending.kind is ext.kind and pending.end == ext.start:
            pending = Extent(pending.start, pending.length + ext.length, ext.kind)
            continue
        if pending is not None:
            yield pending
        pending = ext
    if pending is not None:
        yield pending


def clip(extents: Iterable[Extent], start: int, end: int) -> Iterator[Extent]:
    """Keep only the part of each extent inside [start, end)."""
    for ext in extents:
        lo, hi = max(ext.start, start), min(ext.end, end)
        if lo < hi:
            yield Extent(lo, hi - lo, ext.kind)


def from_nbd_entries(offset: int, entries: Sequence[int], zero_flag: int = 2) -> Iterator[Extent]:
    """Turn an NBD base:allocation reply ([length, flags, ...]) into extents.

    A range is ZERO only when the server says it reads as zeros (NBD_STATE_ZERO);
    a hole without that flag may hold anything and must be read.
    """
    pos = offset
    for i in range(0, len(entries) - 1, 2):
        length, flags = entries[i], entries[i + 1]
        yield Extent(pos, length, Kind.ZERO if flags & zero_flag else Kind.DATA)
        pos += length


def dirty_ranges(offset: int, entries: Sequence[int]) -> Iterator[Range]:
    """Dirty ranges from a qemu:dirty-bitmap reply (flag 1 = dirty)."""
    pos = offset
    for i in range(0, len(entries) - 1, 2):
        length, flags = entries[i], entries[i + 1]
        if flags & 1:
            yield (pos, pos + length)
        pos += length


def overlay(extents: Iterable[Extent], ranges: Iterable[Range], kind: Kind) -> Iterator[Extent]:
    """Give `kind` to the DATA parts of `extents` that fall inside `ranges`.

    Used for a free-space map (free DATA becomes ZERO). Both inputs must be sorted;
    ranges may overlap each other.
    """
    for part, inside in _partition(extents, ranges):
        yield Extent(part.start, part.length, kind) if inside and part.kind is Kind.DATA else part


def restrict(extents: Iterable[Extent], ranges: Iterable[Range]) -> Iterator[Extent]:
    """Keep extents as they are inside `ranges` and mark the rest SKIP.

    Used for an incremental copy: outside the dirty ranges the target already holds
    the right content.
    """
    for part, inside in _partition(extents, ranges):
        yield part if inside else Extent(part.start, part.length, Kind.SKIP)


def _partition(extents: Iterable[Extent], ranges: Iterable[Range]) -> Iterator[tuple[Extent, bool]]:
    """Cut sorted extents at the edges of `ranges`; tell for each part if it is inside."""
    spans = _normalize(ranges)
    i = 0
    for ext in extents:
        pos = ext.start
        while i < len(spans) and spans[i][1] <= pos:
            i += 1
        j = i
        while pos < ext.end:
            if j >= len(spans) or spans[j][0] >= ext.end:
                yield Extent(pos, ext.end - pos, ext.kind), False
                break
            lo, hi = max(spans[j][0], pos), min(spans[j][1], ext.end)
            if lo > pos:
                yield Extent(pos, lo - pos, ext.kind), False
            yield Extent(lo, hi - lo, ext.kind), True
            pos = hi
            j += 1


def _normalize(ranges: Iterable[Range]) -> list[Range]:
    out: list[Range] = []
    for lo, hi in sorted(ranges):
        if hi <= lo:
            continue
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def coalesce(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, non-overlapping ranges with touching neighbours joined."""
    return _normalize(ranges)

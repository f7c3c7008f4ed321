"""`null:` — a target that discards, or a source of zeros (`null:SIZE`)."""

from __future__ import annotations

from collections.abc import Iterator

from p2v.transfer.endpoints.base import Done, Endpoint
from p2v.transfer.extents import Extent, Kind


class NullEndpoint(Endpoint):
    def __init__(self, size: int) -> None:
        self.name = "null:"
        self.size = size

    def extents(self, start: int, length: int) -> Iterator[Extent]:
        yield Extent(start, length, Kind.ZERO)

    def clone(self) -> NullEndpoint:
        return self

    def start_read(self, view: memoryview, offset: int, done: Done) -> None:
        view[:] = bytes(len(view))
        done(None)

    def start_write(self, view: memoryview, offset: int, done: Done) -> None:
        done(None)

    def start_zero(self, offset: int, length: int, done: Done) -> None:
        done(None)

    def close(self) -> None:
        pass

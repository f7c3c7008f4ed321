"""The one interface every endpoint of the transfer engine implements.

An endpoint is a disk the engine reads from or writes to. The copy loop knows only
this interface. Data-path calls start an operation and report its end through a
callback: NBD endpoints keep many operations in flight on one connection and
complete them while the worker waits for I/O; local files complete at once.
Each worker thread uses its own clone, so a clone is never shared between threads.
Callbacks run in the worker's thread, except a flush's, which may come from another
thread and must only set flags or fill thread-safe queues.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

from p2v.transfer.extents import Extent, Kind

Done = Callable[[OSError | None], None]


class Endpoint(ABC):
    #: What users see in messages and the journal; never carries a secret.
    name: str
    size: int
    #: Several connections may be used side by side (NBD multi-conn, local files).
    multi_conn: bool = True
    #: The smallest unit the disk reads: a range that cannot be read is narrowed down
    #: to these before it is declared bad.
    sector_size: int = 512

    def extents(self, start: int, length: int) -> Iterator[Extent]:
        """What [start, start + length) holds; by default, data everywhere.

        An endpoint opened with a dirty bitmap reports the clean ranges as SKIP.
        """
        yield Extent(start, length, Kind.DATA)

    def known_zero(self) -> bool:
        """True when the whole disk reads as zeros, so zero ranges need no writes."""
        return all(e.kind is Kind.ZERO for e in self.extents(0, self.size))

    @abstractmethod
    def clone(self) -> Endpoint:
        """Another handle on the same disk, for another worker thread."""

    @abstractmethod
    def start_read(self, view: memoryview, offset: int, done: Done) -> None: ...

    def start_write(self, view: memoryview, offset: int, done: Done) -> None:
        raise PermissionError(f"{self.name} is open read-only")

    def start_zero(self, offset: int, length: int, done: Done) -> None:
        raise PermissionError(f"{self.name} is open read-only")

    def start_flush(self, done: Done) -> None:
        done(None)

    def forget_cache(self) -> None:  # noqa: B027 - most endpoints cache nothing
        """Drop what the host caches of this disk, so the next reads reach it."""

    def nbd_handle(self) -> Any:
        """The libnbd handle to wait on, or None when operations complete at once."""
        return None

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_now(operation: Callable[[], None], done: Done) -> None:
    """Run a synchronous operation and report its outcome the way async ones do."""
    try:
        operation()
    except OSError as e:
        done(e)
    else:
        done(None)

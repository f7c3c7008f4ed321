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

import select
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence

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

    #: Operations complete within the call that starts them (local files, streams);
    #: else they complete while the worker waits in `wait_for_io`.
    completes_at_once: bool = True

    def in_flight(self) -> int:
        """Operations started and not yet completed."""
        return 0

    def poll(self, timeout: float) -> None:  # noqa: B027 - nothing in flight by default
        """Wait up to `timeout` seconds for operations in flight, completing those done."""

    def io_events(self) -> tuple[int, bool, bool]:
        """(fd, wants to read, wants to write): what to wait on beside other endpoints."""
        raise NotImplementedError

    def notify_io(self, readable: bool, writable: bool) -> None:  # noqa: B027
        """The fd of `io_events` is ready: go on with the operations in flight."""

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


def wait_for_io(endpoints: Sequence[Endpoint], timeout: float) -> None:
    """Wait until any of the endpoints makes progress with its operations in flight."""
    active = [e for e in endpoints if e.in_flight() > 0]
    if not active:
        return
    if len(active) == 1:
        active[0].poll(timeout)
        return
    readers: dict[int, Endpoint] = {}
    writers: dict[int, Endpoint] = {}
    for endpoint in active:
        fd, read, write = endpoint.io_events()
        if read:
            readers[fd] = endpoint
        if write:
            writers[fd] = endpoint
    readable, writable, _ = select.select(list(readers), list(writers), [], timeout)
    for fd in readable:
        readers[fd].notify_io(True, False)
    for fd in writable:
        writers[fd].notify_io(False, True)

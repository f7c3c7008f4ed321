"""NBD exports through libnbd's asynchronous API.

Each clone is its own connection; each keeps many commands in flight and the
worker that owns it completes them with `base.wait_for_io`. Extents come from the
`base:allocation` meta context, and, for an incremental copy, from
`qemu:dirty-bitmap:NAME`: ranges the bitmap calls clean are reported as SKIP.
A server may also be known, by other means, to read as zeros in some ranges (the
agent's scan of its disks): they are reported as ZERO and never read.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import nbd

from p2v.errors import P2VError
from p2v.transfer import extents as ext
from p2v.transfer.blockhash import PIECE_SIZE as PIECE
from p2v.transfer.endpoints.base import Done, Endpoint
from p2v.transfer.endpoints.handshake import HandshakeTimeout, disconnect
from p2v.transfer.extents import Extent, Kind

ALLOCATION = "base:allocation"
_MAX_REQUEST = 32 << 20
_STATUS_SPAN = 1 << 30  # ask block status for at most this much at once


class NbdConnectError(P2VError):
    pass


def _oserror(code: int, what: str) -> OSError:
    code = code or errno.EIO
    return OSError(code, f"{what}: {os.strerror(code)}")


class NbdEndpoint(Endpoint):
    def __init__(
        self,
        name: str,
        connect: Callable[[Any], None],
        *,
        writable: bool,
        bitmap: str | None = None,
        on_close: Callable[[], None] | None = None,
        zeros: Sequence[ext.Range] = (),
    ) -> None:
        self.name = name
        self._zeros = list(zeros)  # sorted (start, end) ranges known to read as zeros
        self._connect = connect
        self._writable = writable
        self._bitmap_context = f"qemu:dirty-bitmap:{bitmap}" if bitmap else None
        self._on_close = on_close
        self.h = self._open_handle()
        self.size = self.h.get_size()
        self.multi_conn = bool(self.h.can_multi_conn())
        self._can_zero = bool(self.h.can_zero())
        self._can_flush = bool(self.h.can_flush())
        maximum = self.h.get_block_size(nbd.SIZE_MAXIMUM) or _MAX_REQUEST
        self.sector_size = max(512, self.h.get_block_size(nbd.SIZE_MINIMUM))
        self._max_request = min(maximum, _MAX_REQUEST)

    def _open_handle(self) -> Any:
        h = nbd.NBD()
        h.set_pread_initialize(False)  # our buffers are filled by the read itself
        h.add_meta_context(ALLOCATION)
        if self._bitmap_context:
            h.add_meta_context(self._bitmap_context)
        try:
            self._connect(h)
        except nbd.Error as e:
            raise NbdConnectError(f"cannot open {self.name}: {e.string}") from e
        except HandshakeTimeout as e:
            raise NbdConnectError(f"cannot open {self.name}: {e}") from e
        if self._writable and h.is_read_only():
            raise NbdConnectError(f"{self.name} is a read-only export; it cannot be a target")
        if self._bitmap_context and not h.can_meta_context(self._bitmap_context):
            raise NbdConnectError(
                f"{self.name} does not offer the dirty bitmap "
                f"{self._bitmap_context.rsplit(':', 1)[1]!r}"
            )
        return h

    def clone(self) -> NbdEndpoint:
        twin = NbdEndpoint.__new__(NbdEndpoint)
        twin.__dict__.update(self.__dict__)
        twin._on_close = None
        twin.h = self._open_handle()
        return twin

    # -- extents ------------------------------------------------------------

    def extents(self, start: int, length: int) -> Iterator[Extent]:
        found = self._served_extents(start, length)
        if self._zeros:
            found = ext.overlay(found, self._zeros, Kind.ZERO)
        yield from found

    def _served_extents(self, start: int, length: int) -> Iterator[Extent]:
        if not self.h.can_meta_context(ALLOCATION):
            yield Extent(start, length, Kind.DATA)
            return
        end = start + length
        pos = start
        while pos < end:
            replies: dict[str, tuple[int, list[int]]] = {}

            def collect(
                context: str,
                offset: int,
                entries: Sequence[int],
                error: Any,
                replies: dict[str, tuple[int, list[int]]] = replies,
            ) -> int:
                replies[context] = (offset, list(entries))
                return 0

            try:
                self.h.block_status(min(end - pos, _STATUS_SPAN), pos, collect)
            except nbd.Error as e:
                raise _oserror(e.errnum, f"block status of {self.name} at {pos}") from e
            found = list(ext.from_nbd_entries(*replies[ALLOCATION]))
            covered = min(found[-1].end if found else pos, end)
            if self._bitmap_context:
                dirty_offset, dirty_entries = replies[self._bitmap_context]
                covered = min(covered, dirty_offset + sum(dirty_entries[0::2]))
                if covered < end and covered - covered % PIECE > pos:
                    covered -= covered % PIECE  # the rest of the piece comes next
                # Whole pieces dirty or clean, so that each piece of an incremental
                # copy has a digest, or is left as it was.
                dirty = [(lo - lo % PIECE, min(-(-hi // PIECE) * PIECE, self.size))
                         for lo, hi in ext.dirty_ranges(dirty_offset, dirty_entries)]  # fmt: skip
                # A reply too short to end on a piece's edge: the piece it cuts is read
                # whole, on both sides of the cut (clean bytes read again are harmless).
                for cut in (pos, covered):
                    if cut % PIECE and cut < end:
                        dirty.append((cut - cut % PIECE, min(cut - cut % PIECE + PIECE, self.size)))
                found = list(ext.restrict(ext.clip(found, pos, covered), dirty))
            if covered <= pos:
                raise OSError(errno.EPROTO, f"{self.name}: empty block status reply at {pos}")
            yield from ext.clip(found, pos, covered)
            pos = covered

    # -- data path ----------------------------------------------------------

    def _start(self, issue: Callable[[Callable[[Any], int]], None], done: Done, what: str) -> None:
        def completed(error: Any) -> int:
            done(_oserror(error.value, what) if error.value else None)
            return 1  # retire the command

        try:
            issue(completed)
        except nbd.Error as e:
            # On a connection that broke, libnbd refuses new commands as EINVAL
            # ("invalid state"): say what it is, like the commands it had in flight.
            gone = self.h.aio_is_dead() or self.h.aio_is_closed()
            done(_oserror(errno.ENOTCONN if gone else e.errnum, what))

    def start_read(self, view: memoryview, offset: int, done: Done) -> None:
        self._split(view, offset, done, self._read_one)

    def _read_one(self, view: memoryview, offset: int, done: Done) -> None:
        self._start(
            lambda cb: self.h.aio_pread(nbd.Buffer.from_buffer(view), offset, completion=cb),
            done,
            f"reading {self.name} at offset {offset}",
        )

    def start_write(self, view: memoryview, offset: int, done: Done) -> None:
        self._split(view, offset, done, self._write_one)

    def _write_one(self, view: memoryview, offset: int, done: Done) -> None:
        self._start(
            lambda cb: self.h.aio_pwrite(nbd.Buffer.from_buffer(view), offset, completion=cb),
            done,
            f"writing {self.name} at offset {offset}",
        )

    def _split(
        self,
        view: memoryview,
        offset: int,
        done: Done,
        one: Callable[[memoryview, int, Done], None],
    ) -> None:
        """Cut a request the server would find too large into several."""
        if len(view) <= self._max_request:
            one(view, offset, done)
            return
        parts = range(0, len(view), self._max_request)
        state: dict[str, Any] = {"left": len(parts), "error": None}

        def part_done(error: OSError | None) -> None:
            state["left"] -= 1
            state["error"] = state["error"] or error
            if state["left"] == 0:
                done(state["error"])

        for pos in parts:
            one(view[pos : pos + self._max_request], offset + pos, part_done)

    def start_zero(self, offset: int, length: int, done: Done) -> None:
        if not self._can_zero:
            self.start_write(memoryview(bytes(length)), offset, done)
            return
        self._start(
            lambda cb: self.h.aio_zero(length, offset, completion=cb),
            done,
            f"zeroing {self.name} at offset {offset}",
        )

    def start_flush(self, done: Done) -> None:
        if not self._can_flush:
            done(None)
            return
        self._start(lambda cb: self.h.aio_flush(completion=cb), done, f"flushing {self.name}")

    completes_at_once = False

    def in_flight(self) -> int:
        return 0 if self.h is None else int(self.h.aio_in_flight())

    def poll(self, timeout: float) -> None:
        self.h.poll(int(timeout * 1000))

    def io_events(self) -> tuple[int, bool, bool]:
        direction = self.h.aio_get_direction()
        return (
            self.h.aio_get_fd(),
            bool(direction & nbd.AIO_DIRECTION_READ),
            bool(direction & nbd.AIO_DIRECTION_WRITE),
        )

    def notify_io(self, readable: bool, writable: bool) -> None:
        if readable:
            self.h.aio_notify_read()
        if writable:
            self.h.aio_notify_write()

    def close(self) -> None:
        try:
            if self.h is not None:
                h, self.h = self.h, None
                # A peer that stopped answering gets no goodbye: its connection is
                # dropped.
                disconnect(h)
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()

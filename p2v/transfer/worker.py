"""A worker: one handle on each side, several blocks in flight, buffers reused.

For each block the worker reads the pieces that hold data, hashes every piece,
writes the runs of non-zero pieces and zeroes (or leaves as holes) the rest, then
reports the block finished; a block whose digest is the one the target is known to
hold there already gets no writes at all. Finished blocks become durable only after
a flush of the target that started after their writes completed; only then are they
handed to the engine for the journal.
"""

from __future__ import annotations

import errno
import mmap
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from p2v.transfer import blockhash
from p2v.transfer.endpoints.base import Endpoint, wait_for_io
from p2v.transfer.extents import Range, coalesce
from p2v.transfer.plan import BlockWork, intersect, zero_runs
from p2v.transfer.progress import Counters, TokenBucket

READ_ATTEMPTS = 5  # a range is read this many times before it is split or declared bad
# A read that fails so lost its connection, not its data: never retried as bad sectors
# (under --rescue that would fill the rest of the disk with zeros).
CONNECTION_LOST = frozenset(
    {errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE}
)
SPLIT = 8  # a range that keeps failing is read again in this many parts, each once
RETRY_DELAY = 0.02  # seconds, times the attempt number


class SourceReadError(Exception):
    def __init__(self, source: str, bad: list[Range], cause: OSError) -> None:
        spans = ", ".join(f"{lo}-{hi}" for lo, hi in bad[:8])
        more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
        super().__init__(
            f"cannot read {source}: {cause.strerror} at byte ranges {spans}{more} "
            f"(add --rescue to copy the rest and fill these with zeros)"
        )
        self.bad = bad


class TargetWriteError(Exception):
    pass


class PeerTimeout(Exception):
    """A side of the copy stopped answering: its replies are overdue."""

    def __init__(self, endpoint: str, seconds: float, flushing: bool = False) -> None:
        if flushing:
            message = f"{endpoint} did not finish writing out its cache in {seconds:g} s"
        else:
            message = (
                f"no reply from {endpoint} for {seconds:g} s (is it still running and "
                "reachable? a failing disk can take longer over one bad sector: --io-timeout)"
            )
        super().__init__(message)


class PeerLost(Exception):
    """The connection to a side broke in the middle of the copy."""


@dataclass(slots=True)
class Completion:
    index: int
    digest: bytes | None  # None when parts of the block were left alone (incremental)
    bad: list[Range] = field(default_factory=list)
    # With WorkerSettings.pieces: each piece's digest, None for a piece left alone, so
    # that a block partly left alone gets its digest from an earlier copy's pieces.
    pieces: tuple[bytes | None, ...] | None = None


@dataclass
class WorkerSettings:
    depth: int  # blocks in flight
    target_zero: bool  # the target reads as zeros: zero runs need no writes
    rescue: bool
    checkpoint_interval: float
    io_timeout: float  # seconds without a reply before a side counts as gone
    limiter: TokenBucket | None = None
    pieces: bool = False  # report every block's piece digests (Completion.pieces)
    held: Mapping[int, bytes] = field(default_factory=dict)  # digests the target holds

    @property
    def flush_timeout(self) -> float:
        # A flush makes the disk write out its cache: longer than any one request.
        return 10 * self.io_timeout


_READING, _WRITING = "reading", "writing"


class FinalFlush:
    """Workers end one by one; the last one flushes the target for all of them.

    One flush at the end instead of one per worker: each costs a full sync of the
    device. A flush covers what every worker wrote (one file descriptor, or an NBD
    export with multi-conn, which the engine needs for several connections).
    """

    def __init__(self, workers: int) -> None:
        self._left = workers
        self._handed: list[Completion] = []
        self._lock = threading.Lock()

    def arrive(self, unflushed: list[Completion]) -> list[Completion] | None:
        """Hand over blocks not yet durable; the last to arrive gets them all back."""
        with self._lock:
            self._handed += unflushed
            self._left -= 1
            return self._handed if self._left == 0 else None


class _Slot:
    """One block in flight and the buffer it owns for the whole copy."""

    def __init__(self) -> None:
        # mmap memory is page-aligned, as direct I/O needs.
        self.view = memoryview(mmap.mmap(-1, blockhash.BLOCK_SIZE))
        self.work: BlockWork | None = None

    def begin(self, work: BlockWork) -> None:
        self.work = work
        self.stage = _READING
        self.pending = 0
        self.failures: list[tuple[Range, OSError]] = []
        self.attempts: dict[Range, int] = {}
        self.bad: list[tuple[Range, OSError]] = []
        self.write_error: OSError | None = None
        self.digest: bytes | None = None
        self.pieces: tuple[bytes | None, ...] | None = None
        self.copied = 0
        self.unchanged = False  # the target holds this block already: nothing written
        self.retry_at = 0.0


class Worker(threading.Thread):
    def __init__(
        self,
        source: Endpoint,
        target: Endpoint,
        work: queue.Queue[BlockWork | None],
        durable: queue.SimpleQueue[list[Completion] | None],
        stop: threading.Event,
        settings: WorkerSettings,
        final: FinalFlush,
    ) -> None:
        super().__init__(daemon=True)
        self.source, self.target = source, target
        self.work, self.durable, self.stop, self.settings = work, durable, stop, settings
        self.final = final
        self.counters = Counters()
        self.error: BaseException | None = None
        self._sides = [source, target]
        self._unflushed: list[Completion] = []
        self._flushing = False
        self._flush_error: OSError | None = None
        self._last_flush = time.monotonic()
        self._completions = 0  # operations completed, to tell when waiting is over
        self._progress = time.monotonic()  # when an operation last completed or began
        self._arrived = False  # at the final flush

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as e:
            self.error = e
            self.stop.set()
            if not self._arrived:
                # Blocks other workers handed over may stay unrecorded: a resume
                # copies them again.
                self.final.arrive([])
        finally:
            self._drain()
            self.durable.put(None)

    def _loop(self) -> None:
        free = [_Slot() for _ in range(self.settings.depth)]
        active: list[_Slot] = []
        exhausted = False
        while True:
            while free and not exhausted and not self.stop.is_set():
                item = self._take(wait=not active)
                if item is _EMPTY:
                    break
                if item is None:
                    exhausted = True
                    break
                slot = free.pop()
                active.append(slot)
                self._start(slot, item)
                if self.settings.limiter:
                    # Each start waited for its turn: let finished blocks be written and
                    # checkpointed between them, not only once every slot is full.
                    break
            for slot in [s for s in active if s.pending == 0]:
                if self._advance(slot):
                    active.remove(slot)
                    free.append(slot)
            self._check_flush()
            if not active and (exhausted or self.stop.is_set()):
                break
            if active and all(s.pending or s.failures for s in active):
                self._wait(active)
            self._checkpoint(force=False)
        # The last worker to finish flushes for all: one flush ends the copy.
        self._settle()
        handed = self.final.arrive(self._unflushed)
        self._arrived = True
        self._unflushed = handed or []
        self._checkpoint(force=True)  # nothing when another worker flushes for this one
        self._settle()

    def _settle(self) -> None:
        """Wait for this worker's own flush in flight, if any."""
        deadline = time.monotonic() + self.settings.flush_timeout
        while self._flushing:
            if time.monotonic() > deadline:
                raise PeerTimeout(self.target.name, self.settings.flush_timeout, flushing=True)
            if any(side.in_flight() for side in self._sides):
                wait_for_io(self._sides, 0.5)
            else:
                time.sleep(0.002)  # a local file's flush runs in its own thread
        self._check_flush()

    def _wait(self, active: list[_Slot]) -> None:
        """Wait until an operation completes, or the next failed read's turn to retry."""
        now = time.monotonic()
        timeout = max(0.0, min([0.5, *(s.retry_at - now for s in active if not s.pending)]))
        if not any(s.pending for s in active):
            time.sleep(timeout)
            return
        # A reply arrives in many pieces; this loop stays small while it does.
        seen, deadline = self._completions, now + timeout
        while self._completions == seen and time.monotonic() < deadline:
            wait_for_io(self._sides, timeout)
        now = time.monotonic()
        if self._completions != seen:
            self._progress = now
        elif now - self._progress > self.settings.io_timeout:
            reading = any(s.pending and s.stage == _READING for s in active)
            side = self.source if reading else self.target
            raise PeerTimeout(side.name, self.settings.io_timeout)

    def _take(self, wait: bool) -> Any:
        while True:
            try:
                return self.work.get(timeout=0.2) if wait else self.work.get_nowait()
            except queue.Empty:
                if not wait or self.stop.is_set():
                    return _EMPTY

    # -- reading ------------------------------------------------------------

    def _start(self, slot: _Slot, work: BlockWork) -> None:
        slot.begin(work)
        if self.settings.limiter:
            self.settings.limiter.take(work.read_bytes)
        self._progress = time.monotonic()
        for span in work.reads:
            self._read(slot, span)

    def _read(self, slot: _Slot, span: Range) -> None:
        assert slot.work is not None
        base = slot.work.start

        def done(error: OSError | None) -> None:
            slot.pending -= 1
            self._completions += 1
            if error:
                slot.failures.append((span, error))
            else:
                self.counters.read += span[1] - span[0]

        slot.pending += 1
        self.source.start_read(slot.view[span[0] - base : span[1] - base], span[0], done)

    def _retry(self, slot: _Slot) -> None:
        """Read failed ranges again. One that keeps failing is narrowed down as
        ddrescue does: read in parts, and the parts that fail in smaller parts, down to
        the source's sector; only sectors that still fail are bad."""
        failures, slot.failures = slot.failures, []
        for span, error in failures:
            attempt = slot.attempts.get(span, 0) + 1
            slot.attempts[span] = attempt
            self.counters.retried += 1
            if attempt < READ_ATTEMPTS:
                self._read(slot, span)
            elif span[1] - span[0] > self.source.sector_size:
                for part in split_range(span, self.source.sector_size):
                    slot.attempts[part] = READ_ATTEMPTS - 1  # one last try each
                    self._read(slot, part)
            else:
                slot.bad.append((span, error))

    # -- hashing and writing ------------------------------------------------

    def _advance(self, slot: _Slot) -> bool:
        """Move a block with nothing in flight on; True once it is finished."""
        if slot.stage == _READING:
            if slot.failures:
                lost = next((e for _, e in slot.failures if e.errno in CONNECTION_LOST), None)
                if lost is not None:
                    raise PeerLost(f"lost the connection to {self.source.name}: {lost.strerror}")
                # Give a struggling disk a moment, without holding up other blocks.
                now = time.monotonic()
                if not slot.retry_at:
                    attempts = max(slot.attempts.get(span, 0) for span, _ in slot.failures)
                    slot.retry_at = now + RETRY_DELAY * (attempts + 1)
                elif now >= slot.retry_at:
                    slot.retry_at = 0.0
                    self._retry(slot)
                return False
            if slot.bad:
                self._handle_bad(slot)
            self._hash_and_write(slot)
            if slot.pending:
                return False
        if slot.write_error:
            raise TargetWriteError(
                f"writing {self.target.name}: {slot.write_error.strerror}"
            ) from slot.write_error
        self._finish(slot)
        return True

    def _handle_bad(self, slot: _Slot) -> None:
        bad = coalesce(span for span, _ in slot.bad)
        if not self.settings.rescue:
            raise SourceReadError(self.source.name, bad, slot.bad[0][1])
        assert slot.work is not None
        for lo, hi in bad:
            slot.view[lo - slot.work.start : hi - slot.work.start] = bytes(hi - lo)

    def _hash_and_write(self, slot: _Slot) -> None:
        work, view = slot.work, slot.view
        assert work is not None
        base, piece = work.start, blockhash.PIECE_SIZE
        target_zero = self.settings.target_zero
        digests: dict[int, bytes] = {}
        writes: list[Range] = []
        zeros: list[Range] = [] if target_zero else list(work.zeros)
        for span in work.reads:
            flags = []
            for lo in range(span[0], span[1], piece):
                n = min(piece, span[1] - lo)
                digest = blockhash.piece_digest(view[lo - base : lo - base + n])
                digests[(lo - base) // piece] = digest
                flags.append(digest == blockhash.zero_piece(n))
            data, zero = zero_runs(span, flags)
            writes += data
            if not target_zero:
                zeros += zero
        if target_zero:
            # Zeros read around the data, in its first and last piece, stay holes.
            writes = intersect(writes, list(work.data))
        lengths = blockhash.piece_lengths(work.length)
        if not work.skipped:
            slot.digest = blockhash.block_digest(
                digests.get(i) or blockhash.zero_piece(n) for i, n in enumerate(lengths)
            )
        if self.settings.pieces:
            slot.pieces = _pieces(work, digests, lengths)
        slot.stage = _WRITING
        if slot.digest is not None and self.settings.held.get(work.index) == slot.digest:
            slot.unchanged = True
            return
        slot.copied = sum(hi - lo for lo, hi in writes)
        for lo, hi in writes:
            slot.pending += 1
            self.target.start_write(view[lo - base : hi - base], lo, self._write_done(slot))
        for lo, hi in coalesce(zeros):
            slot.pending += 1
            self.target.start_zero(lo, hi - lo, self._write_done(slot))

    def _write_done(self, slot: _Slot) -> Any:
        def done(error: OSError | None) -> None:
            slot.pending -= 1
            self._completions += 1
            if error and not slot.write_error:
                slot.write_error = error

        return done

    def _finish(self, slot: _Slot) -> None:
        work = slot.work
        assert work is not None
        if slot.unchanged:
            self.counters.add(unchanged=work.length)
        else:
            self.counters.add(
                copied=slot.copied,
                zeroed=work.length - slot.copied - work.skipped,
                skipped=work.skipped,
            )
        bad = coalesce(span for span, _ in slot.bad)
        self._unflushed.append(Completion(work.index, slot.digest, bad, slot.pieces))
        slot.work = None

    # -- durability ---------------------------------------------------------

    def _checkpoint(self, force: bool) -> None:
        """Flush the target now and then; what was finished before is then durable."""
        if self._flushing or not self._unflushed:
            return
        if not force and time.monotonic() - self._last_flush < self.settings.checkpoint_interval:
            return
        batch, self._unflushed = self._unflushed, []
        self._flushing = True
        self._last_flush = time.monotonic()

        def done(error: OSError | None) -> None:
            self._flushing = False
            if error:
                self._flush_error = error
            else:
                self.durable.put(batch)

        self.target.start_flush(done)

    def _check_flush(self) -> None:
        if self._flush_error:
            raise TargetWriteError(f"flushing {self.target.name}: {self._flush_error.strerror}")

    def _drain(self) -> None:
        """Wait for commands still in flight: their buffers must outlive them. (From
        a side that stopped answering nothing more comes: its connection is dropped,
        and libnbd keeps the buffers of what it abandons.)"""
        if isinstance(self.error, PeerTimeout):
            return
        deadline = time.monotonic() + 60
        while any(side.in_flight() for side in self._sides) and time.monotonic() < deadline:
            try:
                wait_for_io(self._sides, 0.5)
            except Exception:  # the connection broke; nothing more will complete
                return


_EMPTY = object()


def _pieces(
    work: BlockWork, read: dict[int, bytes], lengths: list[int]
) -> tuple[bytes | None, ...]:
    """Each piece's digest: hashed when read, the zero digest when wholly inside the
    zeros, None when (some of) it was left alone."""
    piece = blockhash.PIECE_SIZE
    out: list[bytes | None] = []
    zeros = list(work.zeros)
    for i, n in enumerate(lengths):
        if i in read:
            out.append(read[i])
            continue
        lo = work.start + i * piece
        whole = intersect([(lo, lo + n)], zeros) == [(lo, lo + n)]
        out.append(blockhash.zero_piece(n) if whole or not work.skipped else None)
    return tuple(out)


def split_range(span: Range, sector: int, parts: int = SPLIT) -> list[Range]:
    """`span` cut into about `parts` pieces on sector boundaries (whole sectors each,
    but the last piece of a span that does not end on one)."""
    lo, hi = span
    step = max(sector, -(-(hi - lo) // parts // sector) * sector)
    return [(start, min(start + step, hi)) for start in range(lo, hi, step)]

"""The copy loop: extents first, then blocks to workers, digests and durability back.

1. Ask the source what it holds (all extents, before the first byte moves).
2. A producer turns extents into block work; blocks with nothing to read or write
   are finished on the spot, the rest go through a bounded queue to the workers.
3. Each worker owns one connection to each side and a few block buffers.
   Blocks the target is known to hold already (`held`: digests an earlier copy into
   it recorded) are read and hashed as ever, but written only where they differ.
4. Blocks come back durable (after a target flush) with their digests; the caller
   records them (the journal), and the disk digest is assembled at the end.
The first error stops everything; what was durable by then is kept.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from p2v.transfer import DEFAULT_CHECKPOINT, DEFAULT_IO_TIMEOUT, blockhash
from p2v.transfer import extents as ext
from p2v.transfer.endpoints.base import Endpoint
from p2v.transfer.extents import Extent, Kind, Range
from p2v.transfer.plan import BlockWork, plan_blocks
from p2v.transfer.progress import Counters, QuietReporter, Reporter, Snapshot, TokenBucket
from p2v.transfer.worker import Completion, FinalFlush, Worker, WorkerSettings

log = logging.getLogger(__name__)


def default_connections(source: Endpoint | None = None) -> int:
    """How many workers copy side by side, each with a connection to each side.

    NBD reads are asynchronous, many in flight on each connection: one connection
    (and thread) per core, up to 4; more only fight over the cores. A local file is
    read synchronously and its worker waits on each read without using a core: 4
    workers keep the disk busy, whatever the cores.
    """
    if source is not None and source.completes_at_once:
        return 4
    return max(1, min(4, os.cpu_count() or 1))


DEFAULT_REQUESTS = 8  # blocks in flight per connection: 32 MiB of buffers each


@dataclass
class Settings:
    connections: int | None = None  # None: default_connections(source)
    requests: int = DEFAULT_REQUESTS
    rescue: bool = False
    bwlimit: int | None = None  # bytes/s
    checkpoint_interval: float = DEFAULT_CHECKPOINT
    io_timeout: float = DEFAULT_IO_TIMEOUT
    pieces: bool = False  # blocks come back with their pieces' digests (Completion.pieces)


@dataclass
class Outcome:
    digest: str | None  # None when parts were left alone (incremental copy)
    snapshot: Snapshot
    bad: list[Range] = field(default_factory=list)


class Transfer:
    def __init__(
        self,
        source: Endpoint,
        target: Endpoint,
        *,
        size: int | None = None,
        settings: Settings | None = None,
        target_zero: bool = False,
        free: Iterable[Range] = (),
        done: Mapping[int, bytes | None] | None = None,
        held: Mapping[int, bytes] | None = None,
        on_durable: Callable[[list[Completion]], None] = lambda batch: None,
        reporter: Reporter | None = None,
    ) -> None:
        self.source, self.target = source, target
        self.size = source.size if size is None else size
        self.settings = settings or Settings()
        self.target_zero = target_zero
        self.free = list(free)
        self.done = dict(done or {})
        # Digests of the blocks the target holds now, as the caller knows them (an
        # earlier copy into it, not changed since): such a block is not written again.
        self.held = dict(held or {})
        self.on_durable = on_durable
        self.reporter = reporter or QuietReporter()

    def run(self) -> Outcome:
        size = self.size
        begun = time.monotonic()
        found = self._extents(size)
        log.debug(
            "%d extents of %s in %.2f s", len(found), self.source.name, time.monotonic() - begun
        )
        connections = self.settings.connections or default_connections(self.source)
        if not (self.source.multi_conn and self.target.multi_conn):
            connections = 1
        depth = max(1, self.settings.requests)
        work: queue.Queue[BlockWork | None] = queue.Queue(maxsize=connections * depth * 2)
        # Durable blocks, and None from each thread as it ends.
        durable: queue.SimpleQueue[list[Completion] | None] = queue.SimpleQueue()
        stop = threading.Event()
        worker_settings = WorkerSettings(
            depth=depth,
            target_zero=self.target_zero,
            rescue=self.settings.rescue,
            checkpoint_interval=self.settings.checkpoint_interval,
            io_timeout=self.settings.io_timeout,
            limiter=TokenBucket(self.settings.bwlimit) if self.settings.bwlimit else None,
            pieces=self.settings.pieces,
            held=self.held,
        )
        pairs = self._handles(connections)
        final = FinalFlush(len(pairs))
        workers = [
            Worker(src, dst, work, durable, stop, worker_settings, final) for src, dst in pairs
        ]
        producer = _Producer(
            found, size, self.done, self.held, self.target_zero, work, durable, stop
        )
        producer.consumers = len(workers)
        resumed = sum(blockhash.block_length(i, size) for i in self.done)
        digest = blockhash.DiskDigest(size)
        for index, block in self.done.items():
            digest.add(index, block)
        unknown = False
        bad: list[Range] = []
        counters = [producer.counters] + [w.counters for w in workers]
        started = time.monotonic()

        finished = 0

        def collect(timeout: float) -> None:
            nonlocal unknown, finished
            try:
                batch = durable.get(timeout=timeout)
            except queue.Empty:
                return
            if batch is None:  # a thread has ended
                finished += 1
                return
            for completion in batch:
                if completion.digest is None:
                    unknown = True
                else:
                    digest.add(completion.index, completion.digest)
                bad.extend(completion.bad)
            self.on_durable(batch)

        threads: list[threading.Thread] = [producer, *workers]
        try:
            _start(threads)
            while finished < len(threads):
                collect(0.5)
                self.reporter.update(
                    Snapshot.of(counters, size, resumed, time.monotonic() - started)
                )
        except BaseException:
            stop.set()
            raise
        finally:
            for thread in threads:
                if thread.ident is not None:  # start() itself can fail
                    thread.join()
            while not durable.empty():
                collect(0)
            for worker in workers[1:]:
                worker.source.close()
                worker.target.close()
        snap = Snapshot.of(counters, size, resumed, time.monotonic() - started)
        log.debug("%d connections, copy and flush done in %.2f s", len(workers), snap.elapsed)
        self.reporter.close(snap)
        for thread in threads:
            error = getattr(thread, "error", None)
            if error is not None:
                raise error
        return Outcome(None if unknown else digest.hexdigest(), snap, ext.coalesce(bad))

    def _extents(self, size: int) -> list[Extent]:
        found: Iterator[Extent] = ext.merge(self.source.extents(0, size))
        if self.free:
            found = ext.merge(ext.overlay(found, self.free, Kind.ZERO))
        return list(found)

    def _handles(self, connections: int) -> list[tuple[Endpoint, Endpoint]]:
        """The first worker uses the endpoints themselves, the others clones."""
        pairs = [(self.source, self.target)]
        try:
            for _ in range(connections - 1):
                pairs.append((self.source.clone(), self.target.clone()))
        except BaseException:
            for src, dst in pairs[1:]:
                src.close()
                dst.close()
            raise
        return pairs


class _Producer(threading.Thread):
    """Turns extents into block work; finishes blocks that need no I/O itself."""

    def __init__(
        self,
        found: list[Extent],
        size: int,
        done: Mapping[int, bytes | None],
        held: Mapping[int, bytes],
        target_zero: bool,
        work: queue.Queue[BlockWork | None],
        durable: queue.SimpleQueue[list[Completion] | None],
        stop: threading.Event,
    ) -> None:
        super().__init__(daemon=True)
        self.found, self.size, self.done, self.held = found, size, done, held
        self.target_zero = target_zero
        self.work, self.durable, self.stop = work, durable, stop
        self.counters = Counters()
        self.error: BaseException | None = None
        self.consumers = 1
        self._finished: list[Completion] = []  # blocks done without I/O, not yet handed over

    def run(self) -> None:
        try:
            self._produce()
        except BaseException as e:
            self.error = e
            self.stop.set()
        finally:
            self._hand_over()
            self._finish_queue()
            self.durable.put(None)

    def _produce(self) -> None:
        for block in plan_blocks(self.found, self.size):
            if self.stop.is_set():
                return
            if block.index in self.done:
                continue
            if not block.reads:
                zero = blockhash.zero_block(block.length)
                if block.skipped == 0 and self.held.get(block.index) == zero:
                    # All zeros, and zeros are what the target holds there already.
                    self._finish(Completion(block.index, zero), unchanged=block.length)
                    continue
                if self.target_zero or not block.zeros:
                    # Nothing to read or write: zeros on a zero target, or clean blocks.
                    self._finish(
                        Completion(block.index, zero if block.skipped == 0 else None),
                        zeroed=block.length - block.skipped,
                        skipped=block.skipped,
                    )
                    continue
            self._put(block)

    def _finish(self, completion: Completion, **counted: int) -> None:
        """A block done without I/O."""
        self._finished.append(completion)
        self.counters.add(**counted)
        if len(self._finished) >= 256:
            self._hand_over()

    def _hand_over(self) -> None:
        """Pass finished blocks on to be journaled: in batches, each a transaction."""
        if self._finished:
            self.durable.put(self._finished)
            self._finished = []

    def _put(self, item: BlockWork | None) -> bool:
        try:
            self.work.put_nowait(item)
            return True
        except queue.Full:
            self._hand_over()  # the wait may be long: journal what is done first
        while not self.stop.is_set():
            try:
                self.work.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _finish_queue(self) -> None:
        for _ in range(self.consumers):  # one end marker per worker
            if not self._put(None):
                return  # stopping: workers stop on their own


def _start(threads: list[threading.Thread]) -> None:
    """Start the threads with Ctrl-C held back until all run: an interrupt landing
    inside start() leaves a thread running that can be neither stopped nor joined."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        for thread in threads:
            thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)

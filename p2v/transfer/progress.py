"""Progress of a transfer, for people (a tqdm bar) and for scripts (JSON lines).

Only finished work counts: a block adds its bytes when its writes have completed,
never when its reads are issued.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TextIO

from p2v.units import format_size


class Counters:
    """Bytes finished by one thread; the engine sums the threads' counters."""

    def __init__(self) -> None:
        self.copied = 0  # data written
        self.zeroed = 0  # zeros found and left as holes or zeroed
        self.skipped = 0  # left alone: free space, clean in an incremental copy
        self.unchanged = 0  # read, and found to be what the target holds already
        self.retried = 0  # reads issued again after an error
        self.read = 0  # bytes read from the source (what crossed the network, for NBD)

    def add(self, copied: int = 0, zeroed: int = 0, skipped: int = 0, unchanged: int = 0) -> None:
        self.copied += copied
        self.zeroed += zeroed
        self.skipped += skipped
        self.unchanged += unchanged


@dataclass
class Snapshot:
    total: int
    copied: int = 0
    zeroed: int = 0
    skipped: int = 0
    unchanged: int = 0  # what the target held already: read and hashed, not written
    resumed: int = 0  # finished by an earlier run of the same job
    retried: int = 0
    read: int = 0
    elapsed: float = 0.0

    @property
    def done(self) -> int:
        return self.copied + self.zeroed + self.skipped + self.unchanged + self.resumed

    @property
    def rate(self) -> float:
        return (self.done - self.resumed) / self.elapsed if self.elapsed > 0 else 0.0

    @classmethod
    def of(cls, counters: list[Counters], total: int, resumed: int, elapsed: float) -> Snapshot:
        return cls(
            total=total,
            copied=sum(c.copied for c in counters),
            zeroed=sum(c.zeroed for c in counters),
            skipped=sum(c.skipped for c in counters),
            unchanged=sum(c.unchanged for c in counters),
            resumed=resumed,
            retried=sum(c.retried for c in counters),
            read=sum(c.read for c in counters),
            elapsed=elapsed,
        )


class TokenBucket:
    """Caps throughput at `rate` bytes/s across threads (--bwlimit)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()  # when the bucket is next empty of debt

    def take(self, nbytes: int) -> None:
        if nbytes <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now)
            self._next = start + nbytes / self.rate
            wait = start - now
        if wait > 0:
            time.sleep(wait)


class Reporter(Protocol):
    def start(self, job_id: str | None, what: str, total: int) -> None: ...
    def update(self, snap: Snapshot) -> None: ...
    def close(self, snap: Snapshot) -> None: ...


class BarReporter:
    """A tqdm bar on stderr: bytes finished out of the disk size, with the split."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self._stream = stream
        self._bar: Any = None

    def start(self, job_id: str | None, what: str, total: int) -> None:
        from tqdm import tqdm  # only people watching a terminal need it

        self._bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=what,
            file=self._stream,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    def update(self, snap: Snapshot) -> None:
        if self._bar is None:
            return
        self._bar.update(snap.done - self._bar.n)
        unchanged = f", unchanged {format_size(snap.unchanged)}" if snap.unchanged else ""
        self._bar.set_postfix_str(
            f"copied {format_size(snap.copied)}, zero {format_size(snap.zeroed)}, "
            f"skipped {format_size(snap.skipped + snap.resumed)}{unchanged}",
            refresh=False,
        )

    def close(self, snap: Snapshot) -> None:
        self.update(snap)
        if self._bar is not None:
            self._bar.close()


class JsonReporter:
    """One JSON object per line on stdout; the first names the job."""

    def __init__(self, stream: TextIO = sys.stdout, interval: float = 1.0) -> None:
        self._stream = stream
        self._interval = interval
        self._last = 0.0
        self._job: str | None = None

    def emit(self, event: str, **fields: Any) -> None:
        self._stream.write(json.dumps({"event": event, "job": self._job, **fields}) + "\n")
        self._stream.flush()

    def start(self, job_id: str | None, what: str, total: int) -> None:
        self._job = job_id
        self.emit("start", what=what, total=total)

    def update(self, snap: Snapshot) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self.emit("progress", **_fields(snap))

    def close(self, snap: Snapshot) -> None:
        self.emit("progress", **_fields(snap))


class QuietReporter:
    def start(self, job_id: str | None, what: str, total: int) -> None:
        pass

    def update(self, snap: Snapshot) -> None:
        pass

    def close(self, snap: Snapshot) -> None:
        pass


def _fields(snap: Snapshot) -> dict[str, Any]:
    fields = asdict(snap)
    fields["done"] = snap.done
    fields["rate"] = round(snap.rate)
    fields["elapsed"] = round(snap.elapsed, 3)
    return fields

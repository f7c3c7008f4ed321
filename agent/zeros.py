"""Where a served disk holds nothing but zeros.

A blank disk, or the never-written end of one, would otherwise cross the network in
full: the block device tells nothing of what it holds. So the agent reads each disk
it serves once, here on the server where reading is cheap, beside the export and
read-only, and publishes the runs of zeros it finds (agent.protocol.ZeroMap) as a
small export of its own, updated as the scan goes. The conversion host does not
fetch those runs; what is not scanned yet is fetched as before.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from collections.abc import Callable

from agent.protocol import ZeroMap

GRANULE = 64 << 10  # zeros are looked for in pieces of this size, aligned
MIN_RUN = 1 << 20  # shorter runs are not worth a line: the host finds them as it copies
CHUNK = 4 << 20  # read at once
PUBLISH_EVERY = 1.0  # seconds between two updates of a map being made
_ZERO_CHUNK = bytes(CHUNK)
_ZERO_GRANULE = bytes(GRANULE)


def scan(
    device: str,
    publish: Callable[[ZeroMap], None],
    stop: threading.Event,
) -> ZeroMap:
    """Read `device` (never written) and publish its ZeroMap now and then, and once
    complete. A range that cannot be read counts as data; `stop` ends the scan."""
    fd = _open(device)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        found = ZeroMap(size)
        buffer = mmap.mmap(-1, CHUNK)  # page-aligned, as direct reads need
        run_start: int | None = None  # where the current run of zeros began
        last = time.monotonic()
        for offset in range(0, size, CHUNK):
            if stop.is_set():
                break
            length = min(CHUNK, size - offset)
            for lo, zero in _granules(fd, buffer, offset, length):
                if zero and run_start is None:
                    run_start = lo
                elif not zero and run_start is not None:
                    _add_run(found, run_start, lo)
                    run_start = None
            found.scanned = offset + length
            if time.monotonic() - last > PUBLISH_EVERY:
                publish(_with_open_run(found, run_start))
                last = time.monotonic()
        if run_start is not None:
            _add_run(found, run_start, found.scanned)
        publish(found)
        return found
    finally:
        os.close(fd)


def _open(device: str) -> int:
    try:  # past the page cache: a scan should not push out what clients read
        return os.open(device, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return os.open(device, os.O_RDONLY | os.O_CLOEXEC)


def _granules(fd: int, buffer: mmap.mmap, offset: int, length: int) -> list[tuple[int, bool]]:
    """(offset, holds only zeros) of each granule of one chunk."""
    try:
        got = os.preadv(fd, [memoryview(buffer)[:length]], offset)
    except OSError:
        got = 0  # unreadable here (a bad sector): data, as far as the host knows
    if got == length and buffer[:length] == _ZERO_CHUNK[:length]:
        return [(lo, True) for lo in range(offset, offset + length, GRANULE)]
    result = []
    for lo in range(offset, offset + length, GRANULE):
        start, end = lo - offset, min(lo - offset + GRANULE, got)
        result.append((lo, end - start == GRANULE and buffer[start:end] == _ZERO_GRANULE))
    return result


def _add_run(found: ZeroMap, start: int, end: int) -> None:
    if end - start >= MIN_RUN:
        found.runs.append((start, end - start))


def _with_open_run(found: ZeroMap, run_start: int | None) -> ZeroMap:
    """The map so far, with the run of zeros the scan is in counted up to here."""
    if run_start is None or found.scanned - run_start < MIN_RUN:
        return found
    return ZeroMap(found.size, found.scanned, [*found.runs, (run_start, found.scanned - run_start)])

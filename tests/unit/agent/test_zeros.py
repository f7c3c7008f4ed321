"""The agent's scan for zeros, on image files with data at known places."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent import zeros
from agent.protocol import ZeroMap

MiB = 1 << 20


def image(path: Path, size: int, data: list[tuple[int, int]]) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in data:
            f.seek(offset)
            f.write(b"\x5a" * length)
    return path


def test_runs_of_zeros_are_found_between_the_data(tmp_path: Path) -> None:
    # Data at the start, a lone byte at 20 MiB + 1, data across the 40 MiB mark, and
    # a 64 KiB run of zeros between two data pieces: too short to be listed.
    data = [(0, 3 * MiB), (20 * MiB + 1, 1), (40 * MiB - 100, 200), (50 * MiB, 64 << 10),
            (50 * MiB + (128 << 10), 64 << 10)]  # fmt: skip
    disk = image(tmp_path / "disk.raw", 64 * MiB, data)
    published: list[ZeroMap] = []
    found = zeros.scan(str(disk), published.append, threading.Event())
    assert found.complete and published[-1] == found
    granule = zeros.GRANULE
    assert found.runs == [
        (3 * MiB, 17 * MiB),
        (20 * MiB + granule, 20 * MiB - 2 * granule),
        (40 * MiB + granule, 10 * MiB - granule),
        (50 * MiB + 192 * 1024, 14 * MiB - 192 * 1024),
    ]
    assert ZeroMap.from_json(found.to_json()) == found


def test_a_blank_disk_is_one_run(tmp_path: Path) -> None:
    disk = image(tmp_path / "blank.raw", 16 * MiB + 4096, [])
    found = zeros.scan(str(disk), lambda m: None, threading.Event())
    assert found.runs == [(0, 16 * MiB + 4096)]


def test_a_stopped_scan_claims_only_what_it_read(tmp_path: Path) -> None:
    disk = image(tmp_path / "blank.raw", 64 * MiB, [])
    stop = threading.Event()
    seen: list[ZeroMap] = []

    def publish(found: ZeroMap) -> None:
        seen.append(found)
        stop.set()

    zeros.PUBLISH_EVERY, before = 0.0, zeros.PUBLISH_EVERY
    try:
        found = zeros.scan(str(disk), publish, stop)
    finally:
        zeros.PUBLISH_EVERY = before
    assert not found.complete
    assert all(offset + length <= m.scanned for m in seen for offset, length in m.runs)


@pytest.mark.parametrize(
    "text",
    [
        '{"version": 2, "size": 10, "scanned": 10, "runs": []}',
        '{"version": 1, "size": 10, "scanned": 5, "runs": [[0, 6]]}',
        '{"version": 1, "size": 10, "scanned": 10, "runs": [[4, 2], [0, 2]]}',
        "[]",
    ],
)
def test_a_map_that_claims_too_much_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        ZeroMap.from_json(text)

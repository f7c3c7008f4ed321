"""Helpers for transfer tests: sparse disks with known content, real NBD servers."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MiB = 1 << 20


def make_disk(path: Path, size: int, chunks: list[tuple[int, int]], seed: int = 7) -> int:
    """A sparse raw disk with random data at (offset, length) chunks; returns data bytes."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in chunks:
            f.seek(offset)
            f.write(rng.randbytes(length))
    return sum(length for _, length in chunks)


def scattered(size: int, count: int, length: int, seed: int = 3) -> list[tuple[int, int]]:
    """`count` non-overlapping chunks of `length` bytes spread over the disk."""
    slots = rng_sample(size // (2 * length), count, seed)
    return [(slot * 2 * length, length) for slot in sorted(slots)]


def rng_sample(population: int, count: int, seed: int) -> list[int]:
    return random.Random(seed).sample(range(population), count)


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def p2v(
    *args: str, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "p2v.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"p2v {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def copy_json(*args: str) -> dict[str, Any]:
    """Run `p2v copy --json` and return its final 'done' event."""
    done = p2v("copy", "--json", *args)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["event"] == "start" and events[0]["job"]
    assert events[-1]["event"] == "done"
    return dict(events[-1])


def digest(spec: str | Path) -> str:
    return p2v("checksum", str(spec)).stdout.split()[0]


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            return
        time.sleep(0.02)
    raise AssertionError(f"{proc.args!r} did not listen on {path}")


@contextlib.contextmanager
def serve(argv: list[str], sock: Path) -> Iterator[str]:
    """Run an NBD server listening on `sock`; yield its URI."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        wait_for_socket(sock, proc)
        yield f"nbd+unix:///?socket={sock}"
    finally:
        proc.terminate()
        proc.wait(10)


def qemu_nbd(image: Path, sock: Path, fmt: str = "raw", *extra: str) -> Any:
    return serve(
        [
            "qemu-nbd",
            f"--format={fmt}",
            "--shared=8",
            "--persistent",
            f"--socket={sock}",
            *extra,
            str(image),
        ],
        sock,
    )


def nbdkit_with_errors(image: Path, sock: Path, rate: str) -> Any:
    """The file plugin behind nbdkit's error filter: reads fail at `rate`."""
    return serve(
        [
            "nbdkit",
            "--foreground",
            "--exit-with-parent",
            f"--unix={sock}",
            "--filter=error",
            "file",
            f"file={image}",
            f"error-pread-rate={rate}",
            "error-pread=EIO",
        ],
        sock,
    )


def nbdkit_with_bad_sectors(image: Path, sock: Path, bad: list[tuple[int, int]]) -> Any:
    """The file plugin behind nbdkit's ddrescue filter: reads that touch the (offset,
    length) ranges of `bad` fail with EIO, every time, as a disk's bad sectors do."""
    size = image.stat().st_size
    lines = ["# Mapfile. Created by GNU ddrescue version 1.27", "0x0 + 1"]
    pos = 0
    for offset, length in sorted(bad):
        if offset > pos:
            lines.append(f"{pos:#x} {offset - pos:#x} +")
        lines.append(f"{offset:#x} {length:#x} -")
        pos = offset + length
    if pos < size:
        lines.append(f"{pos:#x} {size - pos:#x} +")
    mapfile = sock.with_suffix(".map")
    mapfile.write_text("\n".join(lines) + "\n")
    return serve(
        [
            "nbdkit",
            "--foreground",
            "--exit-with-parent",
            f"--unix={sock}",
            "--filter=ddrescue",
            "file",
            f"file={image}",
            f"ddrescue-mapfile={mapfile}",
        ],
        sock,
    )


def data_blocks(job: str) -> int:
    """Blocks of data a copy job has durably written so far (blocks of zeros are
    recorded at once, data blocks only after a flush of the target)."""
    from p2v.transfer import blockhash

    zero = blockhash.zero_block()
    return sum(1 for d in journal_blocks(job).values() if d not in (None, zero))


def journal_blocks(job: str) -> dict[int, bytes | None]:
    from p2v.jobs.journal import Journal

    journal = Journal()
    try:
        return journal.blocks(job)
    finally:
        journal.close()

"""The copy loop on disks held in memory: what it writes, and what it leaves alone."""

from __future__ import annotations

import random
from collections.abc import Iterator

from p2v.transfer import blockhash
from p2v.transfer.endpoints.base import Done, Endpoint
from p2v.transfer.engine import Outcome, Transfer
from p2v.transfer.extents import Extent, Kind
from p2v.transfer.worker import Completion

BLOCK = blockhash.BLOCK_SIZE
PIECE = blockhash.PIECE_SIZE


class MemoryDisk(Endpoint):
    """A disk in a bytearray that keeps a log of the writes and zeroes it was given.
    Its extents are found as a file system's would be: runs of zero pieces are ZERO."""

    def __init__(self, data: bytearray, log: list[tuple[str, int, int]] | None = None):
        self.name = "memory"
        self.data = data
        self.size = len(data)
        self.log: list[tuple[str, int, int]] = [] if log is None else log

    def extents(self, start: int, length: int) -> Iterator[Extent]:
        zeros = bytes(PIECE)
        for lo in range(start, start + length, PIECE):
            n = min(PIECE, start + length - lo)
            zero = self.data[lo : lo + n] == zeros[:n]
            yield Extent(lo, n, Kind.ZERO if zero else Kind.DATA)

    def clone(self) -> MemoryDisk:
        return MemoryDisk(self.data, self.log)  # the same disk, the same log

    def start_read(self, view: memoryview, offset: int, done: Done) -> None:
        view[:] = self.data[offset : offset + len(view)]
        done(None)

    def start_write(self, view: memoryview, offset: int, done: Done) -> None:
        self.data[offset : offset + len(view)] = view
        self.log.append(("write", offset, len(view)))
        done(None)

    def start_zero(self, offset: int, length: int, done: Done) -> None:
        self.data[offset : offset + length] = bytes(length)
        self.log.append(("zero", offset, length))
        done(None)

    def close(self) -> None:
        pass


def disk() -> bytearray:
    """Five blocks: data, data, zeros, data, and a short last block of data and zeros."""
    rng = random.Random(5)
    data = bytearray(4 * BLOCK + 3 * PIECE)
    for index in (0, 1, 3):
        data[index * BLOCK : (index + 1) * BLOCK] = rng.randbytes(BLOCK)
    data[4 * BLOCK : 4 * BLOCK + PIECE] = rng.randbytes(PIECE)
    return data


def copy(
    source: MemoryDisk, target: MemoryDisk, held: dict[int, bytes] | None = None
) -> tuple[Outcome, dict[int, bytes]]:
    """The outcome, and the block digests the journal would record."""
    recorded: dict[int, bytes] = {}

    def record(batch: list[Completion]) -> None:
        recorded.update((c.index, c.digest) for c in batch if c.digest is not None)

    return Transfer(source, target, held=held, on_durable=record).run(), recorded


def test_blocks_the_target_holds_are_not_written_and_changed_ones_are() -> None:
    source = MemoryDisk(disk())
    target = MemoryDisk(bytearray(source.size))
    first, held = copy(source, target)
    assert target.data == source.data

    # Block 1 changes, and the last block gains data where it had zeros.
    source.data[BLOCK + 100 : BLOCK + 200] = b"\x01" * 100
    source.data[4 * BLOCK + 2 * PIECE] = 7
    target.log.clear()
    second, recorded = copy(source, target, held)

    assert target.data == source.data
    touched = {offset // BLOCK for _, offset, _ in target.log}
    assert touched == {1, 4}  # not the blocks of data, nor of zeros, that it holds
    assert second.snapshot.unchanged == 3 * BLOCK
    assert second.snapshot.copied + second.snapshot.zeroed == BLOCK + 3 * PIECE
    # Every block is hashed: the digests are those of the whole new disk.
    fresh, expected = copy(source, MemoryDisk(bytearray(source.size)))
    assert second.digest == fresh.digest != first.digest
    assert recorded == expected


def test_a_held_digest_is_trusted_only_where_it_matches_the_source() -> None:
    source = MemoryDisk(disk())
    # What the caller says the target holds is wrong for block 0: the target holds
    # zeros there. The block's digest differs from the source's, so it is written.
    target = MemoryDisk(bytearray(source.data))
    target.data[:BLOCK] = bytes(BLOCK)
    _, held = copy(source, MemoryDisk(bytearray(source.size)))
    held[0] = blockhash.zero_block()
    outcome, _ = copy(source, target, held)
    assert target.data == source.data
    assert {offset // BLOCK for _, offset, _ in target.log} == {0}
    assert outcome.snapshot.unchanged == source.size - BLOCK

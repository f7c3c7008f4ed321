"""From extents to work: which bytes of each block to read, to zero, to leave alone.

The unit of work is one block of the block hash (4 MiB): a block is finished when
its data is on the target and its digest is known, and that is what the journal
records. Inside a block, reads are whole 64 KiB pieces, so every piece is either
read and hashed, or known to be zero and given the precomputed digest; the data
ranges themselves are kept too, so that a target that reads as zeros gets only
them written, not the zeros around them in their first and last piece.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from p2v.transfer import blockhash
from p2v.transfer.extents import Extent, Kind, Range, coalesce


@dataclass(frozen=True, slots=True)
class BlockWork:
    index: int
    start: int
    length: int
    reads: tuple[Range, ...]  # piece-aligned absolute ranges holding data
    data: tuple[Range, ...]  # the data itself: `reads` without the zeros around it
    zeros: tuple[Range, ...]  # ranges reading as zeros, outside `reads`
    skipped: int  # bytes left as they are on the target (not dirty)

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def read_bytes(self) -> int:
        return sum(hi - lo for lo, hi in self.reads)

    @property
    def zero_bytes(self) -> int:
        return sum(hi - lo for lo, hi in self.zeros)


def plan_blocks(extents: Iterable[Extent], disk_size: int) -> Iterator[BlockWork]:
    """Cut sorted, merged extents that cover [0, disk_size) into blocks.

    Extents may arrive in several batches (a server answers part of a range at a
    time); this generator consumes them lazily and needs them contiguous.
    """
    size = blockhash.BLOCK_SIZE
    index, segments = 0, list[Extent]()  # segments of the current block
    expected = 0
    for ext in extents:
        if ext.start != expected:
            raise ValueError(f"extents are not contiguous at offset {expected}")
        expected = ext.end
        pos = ext.start
        while pos < ext.end:
            block = pos // size
            if block != index:
                if segments:
                    yield _block(index, segments, disk_size)
                index, segments = block, []
            # A run of whole blocks of one kind needs no per-piece work.
            whole = min(ext.end, disk_size) // size
            if pos % size == 0 and block < whole and not segments:
                for full in range(block, whole):
                    yield _uniform_block(full, ext.kind, disk_size)
                pos = whole * size
                index = whole
                continue
            hi = min(ext.end, (block + 1) * size)
            segments.append(Extent(pos, hi - pos, ext.kind))
            pos = hi
    if segments:
        yield _block(index, segments, disk_size)
    if expected < disk_size:
        raise ValueError(f"extents end at {expected}, before the disk's end {disk_size}")


def _uniform_block(index: int, kind: Kind, disk_size: int) -> BlockWork:
    start = index * blockhash.BLOCK_SIZE
    length = blockhash.block_length(index, disk_size)
    span = ((start, start + length),)
    if kind is Kind.DATA:
        return BlockWork(index, start, length, span, span, (), 0)
    if kind is Kind.ZERO:
        return BlockWork(index, start, length, (), (), span, 0)
    return BlockWork(index, start, length, (), (), (), length)


def _block(index: int, segments: list[Extent], disk_size: int) -> BlockWork:
    start = index * blockhash.BLOCK_SIZE
    length = blockhash.block_length(index, disk_size)
    end = start + length
    piece = blockhash.PIECE_SIZE
    reads = coalesce(
        (
            start + (s.start - start) // piece * piece,
            min(end, start - (-(s.end - start) // piece) * piece),
        )
        for s in segments
        if s.kind is Kind.DATA
    )
    data = coalesce((s.start, s.end) for s in segments if s.kind is Kind.DATA)
    zeros = subtract([(s.start, s.end) for s in segments if s.kind is Kind.ZERO], reads)
    skipped = subtract([(s.start, s.end) for s in segments if s.kind is Kind.SKIP], reads)
    return BlockWork(
        index,
        start,
        length,
        tuple(reads),
        tuple(data),
        tuple(zeros),
        sum(hi - lo for lo, hi in skipped),
    )


def subtract(ranges: list[Range], minus: list[Range]) -> list[Range]:
    """Parts of sorted `ranges` not covered by sorted, coalesced `minus`."""
    out: list[Range] = []
    j = 0
    for lo, hi in ranges:
        while j < len(minus) and minus[j][1] <= lo:
            j += 1
        k = j
        while lo < hi:
            if k >= len(minus) or minus[k][0] >= hi:
                out.append((lo, hi))
                break
            if minus[k][0] > lo:
                out.append((lo, minus[k][0]))
            lo = max(lo, minus[k][1])
            k += 1
    return out


def intersect(ranges: list[Range], within: list[Range]) -> list[Range]:
    """Parts of sorted `ranges` inside sorted, coalesced `within`."""
    return subtract(ranges, subtract(ranges, within))


def zero_runs(read: Range, pieces: list[bool]) -> tuple[list[Range], list[Range]]:
    """Split a read range into runs of non-zero and zero pieces (True = zero).

    Returns (data runs, zero runs) as absolute ranges; the last piece of a disk may
    be short, so runs are clipped to the range's end.
    """
    data: list[Range] = []
    zeros: list[Range] = []
    lo, end = read
    for is_zero in pieces:
        hi = min(lo + blockhash.PIECE_SIZE, end)
        runs = zeros if is_zero else data
        if runs and runs[-1][1] == lo:
            runs[-1] = (runs[-1][0], hi)
        else:
            runs.append((lo, hi))
        lo = hi
    return data, zeros

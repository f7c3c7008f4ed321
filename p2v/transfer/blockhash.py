"""A disk digest that depends only on the disk's content, never on its format.

The disk is cut into 4 MiB blocks and each block into 64 KiB pieces. A piece's
digest is BLAKE3 of its bytes; a block's digest is BLAKE3 of its pieces' digests;
the disk's digest is BLAKE3 of a version tag, the disk size and the blocks'
digests in order. BLAKE3 rather than SHA-256: it hashes 64 KiB pieces about twice
as fast here (2.6 against 1.4 GB/s per core, SHA-256 with the CPU's SHA
extensions), and the copy hashes every byte it moves.

Because every level uses precomputed digests for zeros:

- blocks and pieces that a source reports as zero are never read;
- raw and qcow2 images of the same content give the same digest;
- blocks can be hashed by many workers in any order, and a resumed copy reuses
  the digests of blocks it finished before it was interrupted.

A piece of zeros is recognised by comparing it with zeros (memcmp, some 30 GB/s
here) and gets the precomputed digest without being hashed: a block device reports
no extents, so its free space is read, and would otherwise be hashed, in full. A piece
whose digest equals the zero piece's digest is all zeros, which is how the copy
finds zero runs inside data.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from blake3 import blake3

ALGORITHM = "blake3"
BLOCK_SIZE = 4 << 20
PIECE_SIZE = 64 << 10
PIECES_PER_BLOCK = BLOCK_SIZE // PIECE_SIZE
PREFIX = "blockhash-blake3"
_VERSION_TAG = b"p2v-blockhash-2\0"


_ZEROS = bytes(PIECE_SIZE)


def piece_digest(data: bytes | bytearray | memoryview) -> bytes:
    if len(data) <= PIECE_SIZE and _ZEROS.startswith(data):
        return zero_piece(len(data))
    return blake3(data).digest()


@functools.lru_cache(maxsize=8)
def zero_piece(length: int = PIECE_SIZE) -> bytes:
    return blake3(bytes(length)).digest()


def block_digest(pieces: Iterable[bytes]) -> bytes:
    return blake3(b"".join(pieces)).digest()


@functools.lru_cache(maxsize=8)
def zero_block(length: int = BLOCK_SIZE) -> bytes:
    return block_digest(zero_piece(n) for n in piece_lengths(length))


def piece_lengths(block_length: int) -> list[int]:
    """Lengths of the pieces of a block (only a disk's last block can be short)."""
    full, rest = divmod(block_length, PIECE_SIZE)
    return [PIECE_SIZE] * full + ([rest] if rest else [])


def block_length(index: int, disk_size: int) -> int:
    return min(BLOCK_SIZE, disk_size - index * BLOCK_SIZE)


def block_count(disk_size: int) -> int:
    return -(-disk_size // BLOCK_SIZE)


def disk_digest(disk_size: int, blocks: Iterable[bytes]) -> str:
    outer = blake3(_VERSION_TAG + disk_size.to_bytes(8, "big"))
    for digest in blocks:
        outer.update(digest)
    return f"{PREFIX}:{outer.hexdigest()}"


class DiskDigest:
    """Collects block digests as they complete, in any order."""

    def __init__(self, disk_size: int) -> None:
        self.disk_size = disk_size
        self._blocks: dict[int, bytes] = {}

    def add(self, index: int, digest: bytes | None) -> None:
        """Record a block; None stands for an all-zero block."""
        self._blocks[index] = (
            digest if digest is not None else zero_block(block_length(index, self.disk_size))
        )

    def missing(self) -> int:
        return block_count(self.disk_size) - len(self._blocks)

    def hexdigest(self) -> str:
        count = block_count(self.disk_size)
        if len(self._blocks) != count:
            raise ValueError(f"{count - len(self._blocks)} blocks have no digest yet")
        return disk_digest(self.disk_size, (self._blocks[i] for i in range(count)))

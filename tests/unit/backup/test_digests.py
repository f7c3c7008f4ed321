"""An increment reads only the 64 KiB pieces that changed, yet each point of the chain
gets its whole disk's digest: a block partly read takes its other pieces' digests from
the backups before."""

from __future__ import annotations

from pathlib import Path

from p2v.backup.catalog import Catalog, join_pieces
from p2v.backup.job import _block_row
from p2v.transfer import blockhash
from p2v.transfer.plan import BlockWork
from p2v.transfer.worker import Completion, _pieces

PIECE, BLOCK = blockhash.PIECE_SIZE, blockhash.BLOCK_SIZE
SIZE = 2 * BLOCK + 3 * PIECE  # the last block is short: three pieces


def piece(byte: int, n: int = PIECE) -> bytes:
    return blockhash.piece_digest(bytes([byte]) * n)


def test_pieces_read_zero_and_left_alone() -> None:
    zeros = ((BLOCK + PIECE, BLOCK + 2 * PIECE),)
    work = BlockWork(1, BLOCK, BLOCK, reads=((BLOCK, BLOCK + PIECE),), data=(), zeros=zeros,
                     skipped=BLOCK - 2 * PIECE)  # fmt: skip
    got = _pieces(work, {0: piece(7)}, blockhash.piece_lengths(BLOCK))
    assert got[0] == piece(7) and got[1] == blockhash.zero_piece()
    assert set(got[2:]) == {None}


def _backup(catalog: Catalog, n: int, parent: int | None) -> int:
    made = catalog.begin(name=f"b{n}", kind="full" if parent is None else "incremental",
                         parent=parent, vm="vm", vm_uuid="u", uri="qemu:///system",
                         checkpoint=f"c{n}", why=None, domain_xml="<domain/>", job=None,
                         disks=[("vda", SIZE)])  # fmt: skip
    return made.id


def test_a_partly_read_block_gets_the_digest_of_the_whole_block_at_that_instant(
    tmp_path: Path,
) -> None:
    with Catalog(tmp_path, create=True) as catalog:
        full = _backup(catalog, 1, None)
        old = [piece(1)] * blockhash.PIECES_PER_BLOCK
        catalog.add_blocks(full, "vda", [(0, blockhash.block_digest(old), join_pieces(old))])
        inc = _backup(catalog, 2, full)
        chain = catalog.chain(catalog.get(inc))
        disk = catalog.get(inc).disks[0]
        # Piece 3 of block 0 written since; the others left alone.
        seen = tuple(piece(9) if i == 3 else None for i in range(blockhash.PIECES_PER_BLOCK))
        row = _block_row(catalog, chain[1:], disk, Completion(0, None, [], seen))
        now = old[:3] + [piece(9)] + old[4:]
        assert row == (0, blockhash.block_digest(now), join_pieces(now))
        # The short last block, never held before: what was not read is zeros.
        last = (None, piece(5), None)
        row = _block_row(catalog, chain[1:], disk, Completion(2, None, [], last))
        zero = blockhash.zero_piece()
        assert row is not None and row[1] == blockhash.block_digest([zero, piece(5), zero])
        catalog.add_blocks(inc, "vda", [r for r in (_block_row(catalog, chain[1:], disk,
                           Completion(0, None, [], seen)),) if r])  # fmt: skip
        # The disk's digest at the increment: block 0 as now, block 1 zeros (never held).
        expected = blockhash.disk_digest(SIZE, [blockhash.block_digest(now),
                                                blockhash.zero_block(),
                                                blockhash.zero_block(3 * PIECE)])  # fmt: skip
        assert catalog.disk_digest(chain, "vda", SIZE) == expected

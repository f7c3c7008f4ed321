import pytest

from p2v.transfer.blockhash import BLOCK_SIZE, PIECE_SIZE
from p2v.transfer.extents import Extent, Kind
from p2v.transfer.plan import intersect, plan_blocks, subtract, zero_runs

D, Z, S = Kind.DATA, Kind.ZERO, Kind.SKIP
MiB = 1 << 20


def test_whole_blocks_of_one_kind_need_no_piece_work():
    size = 3 * BLOCK_SIZE
    blocks = list(
        plan_blocks([Extent(0, BLOCK_SIZE, D), Extent(BLOCK_SIZE, 2 * BLOCK_SIZE, Z)], size)
    )
    assert [b.index for b in blocks] == [0, 1, 2]
    assert blocks[0].reads == ((0, BLOCK_SIZE),) and blocks[0].zeros == ()
    assert blocks[1].reads == () and blocks[1].zeros == ((BLOCK_SIZE, 2 * BLOCK_SIZE),)


def test_reads_are_widened_to_whole_pieces_and_zeros_are_what_is_left():
    size = BLOCK_SIZE
    ext = [Extent(0, 100, Z), Extent(100, 10, D), Extent(110, size - 110, Z)]
    (block,) = plan_blocks(ext, size)
    assert block.reads == ((0, PIECE_SIZE),)
    assert block.data == ((100, 110),)  # what a target of zeros gets written
    assert block.zeros == ((PIECE_SIZE, size),)
    assert block.skipped == 0


def test_data_spanning_a_block_boundary_lands_in_both_blocks():
    size = 2 * BLOCK_SIZE
    ext = [
        Extent(0, BLOCK_SIZE - 10, Z),
        Extent(BLOCK_SIZE - 10, 20, D),
        Extent(BLOCK_SIZE + 10, BLOCK_SIZE - 10, Z),
    ]
    first, second = plan_blocks(ext, size)
    assert first.reads == ((BLOCK_SIZE - PIECE_SIZE, BLOCK_SIZE),)
    assert second.reads == ((BLOCK_SIZE, BLOCK_SIZE + PIECE_SIZE),)


def test_the_last_block_and_piece_may_be_short():
    size = BLOCK_SIZE + PIECE_SIZE + 512
    (_, last) = plan_blocks([Extent(0, size, D)], size)
    assert last.length == PIECE_SIZE + 512
    assert last.reads == ((BLOCK_SIZE, size),)


def test_skip_inside_a_read_piece_is_read_not_skipped():
    size = BLOCK_SIZE
    ext = [Extent(0, 10, D), Extent(10, MiB - 10, S), Extent(MiB, size - MiB, Z)]
    (block,) = plan_blocks(ext, size)
    assert block.reads == ((0, PIECE_SIZE),)
    assert block.skipped == MiB - PIECE_SIZE
    assert block.zeros == ((MiB, size),)


def test_extents_in_several_batches_are_fine_but_gaps_are_refused():
    size = 2 * BLOCK_SIZE
    batches = [
        Extent(0, 100, D),
        Extent(100, BLOCK_SIZE, D),
        Extent(BLOCK_SIZE + 100, BLOCK_SIZE - 100, Z),
    ]
    assert len(list(plan_blocks(batches, size))) == 2
    with pytest.raises(ValueError, match="not contiguous"):
        list(plan_blocks([Extent(0, 100, D), Extent(200, size - 200, D)], size))
    with pytest.raises(ValueError, match="before the disk's end"):
        list(plan_blocks([Extent(0, 100, D)], size))


def test_subtract():
    assert subtract([(0, 100), (200, 300)], [(50, 60), (90, 210)]) == [
        (0, 50),
        (60, 90),
        (210, 300),
    ]


def test_intersect():
    assert intersect([(0, 100), (200, 300)], [(50, 60), (90, 210), (290, 400)]) == [
        (50, 60),
        (90, 100),
        (200, 210),
        (290, 300),
    ]
    assert intersect([(0, 100)], []) == []


def test_zero_runs_split_a_read_into_data_and_zero_runs():
    start = 10 * PIECE_SIZE
    data, zeros = zero_runs((start, start + 3 * PIECE_SIZE + 100), [False, True, True, False])
    assert data == [
        (start, start + PIECE_SIZE),
        (start + 3 * PIECE_SIZE, start + 3 * PIECE_SIZE + 100),
    ]
    assert zeros == [(start + PIECE_SIZE, start + 3 * PIECE_SIZE)]

from p2v.transfer.extents import (
    Extent,
    Kind,
    clip,
    coalesce,
    dirty_ranges,
    from_nbd_entries,
    merge,
    overlay,
    restrict,
)

D, Z, S = Kind.DATA, Kind.ZERO, Kind.SKIP


def test_merge_joins_neighbours_of_one_kind_and_drops_empty():
    got = list(merge([Extent(0, 4, D), Extent(4, 0, Z), Extent(4, 4, D), Extent(8, 2, Z)]))
    assert got == [Extent(0, 8, D), Extent(8, 2, Z)]


def test_merge_keeps_a_gap_apart():
    assert list(merge([Extent(0, 4, D), Extent(6, 2, D)])) == [Extent(0, 4, D), Extent(6, 2, D)]


def test_clip_cuts_replies_that_run_past_the_range():
    got = list(clip([Extent(0, 10, D), Extent(10, 100, Z)], 5, 20))
    assert got == [Extent(5, 5, D), Extent(10, 10, Z)]


def test_nbd_entries_zero_flag_means_zero_and_a_bare_hole_is_data():
    # length, flags: 1 = hole, 2 = zero, 3 = hole + zero
    got = list(from_nbd_entries(100, [10, 0, 20, 3, 5, 1, 5, 2]))
    assert got == [Extent(100, 10, D), Extent(110, 20, Z), Extent(130, 5, D), Extent(135, 5, Z)]


def test_dirty_ranges_keep_only_flag_one():
    assert list(dirty_ranges(0, [10, 0, 5, 1, 5, 0, 2, 1])) == [(10, 15), (20, 22)]


def test_overlay_turns_free_data_into_zero_and_leaves_zero_alone():
    ext = [Extent(0, 100, D), Extent(100, 50, Z), Extent(150, 50, D)]
    got = list(merge(overlay(ext, [(10, 20), (90, 160), (15, 25)], Z)))
    assert got == [
        Extent(0, 10, D),
        Extent(10, 15, Z),
        Extent(25, 65, D),
        Extent(90, 70, Z),
        Extent(160, 40, D),
    ]


def test_restrict_marks_everything_outside_dirty_ranges_skip():
    ext = [Extent(0, 100, D), Extent(100, 100, Z)]
    got = list(restrict(ext, [(50, 120), (190, 300)]))
    assert got == [
        Extent(0, 50, S),
        Extent(50, 50, D),
        Extent(100, 20, Z),
        Extent(120, 70, S),
        Extent(190, 10, Z),
    ]


def test_restrict_with_no_dirty_range_skips_all():
    assert list(restrict([Extent(0, 10, D)], [])) == [Extent(0, 10, S)]


def test_coalesce_sorts_and_joins_touching_ranges():
    assert coalesce([(10, 20), (0, 5), (5, 8), (15, 30)]) == [(0, 8), (10, 30)]

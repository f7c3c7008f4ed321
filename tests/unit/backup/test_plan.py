"""Which backup comes next: full, incremental or differential, and why a full one."""

from __future__ import annotations

import time

import pytest

from p2v.backup.catalog import Backup, Disk
from p2v.backup.plan import Retention, checkpoint_name, choose, to_drop
from p2v.errors import InputError

UUID = "5f1c3c9e-0000-4000-8000-000000000001"


def backup(n: int, kind: str, parent: int | None, disks: dict[str, int] | None = None) -> Backup:
    sizes = disks or {"vda": 1 << 30}
    return Backup(
        id=n, name=f"b{n}", kind=kind, parent=parent, state="complete", vm="web1",
        vm_uuid=UUID, uri="qemu:///system", checkpoint=f"p2v-c{n}", started=n, ended=n,
        consistency="frozen", why=None, domain_xml="<domain/>", job=None,
        disks=[Disk(t, f"{n:04d}-b{n}/{t}.qcow2", s) for t, s in sizes.items()],
    )  # fmt: skip


CHAIN = [backup(1, "full", None), backup(2, "incremental", 1), backup(3, "incremental", 2)]
NOW = {"vda": 1 << 30}
ALL = {"p2v-c1", "p2v-c2", "p2v-c3"}


def test_the_first_backup_is_full_and_says_why_only_when_another_was_asked() -> None:
    assert choose("auto", [], UUID, NOW, set()).why is None
    asked = choose("incremental", [], UUID, NOW, set())
    assert asked.kind == "full" and "no backup to build on" in str(asked.why)


def test_incremental_builds_on_the_last_and_differential_on_the_last_full() -> None:
    inc = choose("auto", CHAIN, UUID, NOW, ALL)
    assert (inc.kind, inc.parent, inc.since) == ("incremental", 3, "p2v-c3")
    diff = choose("differential", CHAIN, UUID, NOW, ALL)
    assert (diff.kind, diff.parent, diff.since) == ("differential", 1, "p2v-c1")
    assert choose("full", CHAIN, UUID, NOW, ALL).kind == "full"


@pytest.mark.parametrize(
    ("disks", "checkpoints", "why"),
    [
        (NOW, {"p2v-c1", "p2v-c2"}, "checkpoint p2v-c3 is gone"),
        ({"vda": 1 << 30, "vdb": 1 << 20}, ALL, "vdb added"),
        ({"vda": 2 << 30}, ALL, "vda changed size"),
    ],
)
def test_a_lost_chain_falls_back_to_full_saying_why(
    disks: dict[str, int], checkpoints: set[str], why: str
) -> None:
    chosen = choose("incremental", CHAIN, UUID, disks, checkpoints)
    assert chosen.kind == "full" and chosen.parent is None
    assert why in str(chosen.why) and "from b3" in str(chosen.why)


def test_a_checkpoint_whose_bitmap_is_missing_falls_back_to_full_saying_why() -> None:
    broken = {"p2v-c3": "checkpoint inconsistent: missing or broken bitmap"}
    chosen = choose("auto", CHAIN, UUID, NOW, ALL, broken)
    assert chosen.kind == "full" and "bitmap of its checkpoint p2v-c3 is missing" in str(chosen.why)


def test_another_machines_directory_is_refused() -> None:
    with pytest.raises(InputError, match="backups of another machine"):
        choose("auto", CHAIN, "00000000-0000-4000-8000-000000000002", NOW, ALL)


def test_checkpoint_names_are_ours_and_name_the_machine() -> None:
    assert checkpoint_name("20261207-031205", UUID) == "p2v-5f1c3c9e-20261207-031205"


def test_retention_keeps_the_newest_the_last_n_and_one_a_day_or_week() -> None:
    day = 86400
    base = time.mktime((2026, 12, 7, 12, 0, 0, 0, 0, -1))  # a Monday, local time
    # Two a day for six days, oldest first.
    taken = [backup(n, "full" if n == 1 else "incremental", n - 1 or None) for n in range(1, 13)]
    for n, b in enumerate(taken):
        b.started = base - (11 - n) // 2 * day - (n % 2 == 0) * 3600
    ids = lambda dropped: sorted(b.id for b in dropped)  # noqa: E731
    assert to_drop(taken, Retention()) == []
    assert ids(to_drop(taken, Retention(last=3))) == list(range(1, 10))
    # The newest of each of the 3 latest days: 12, 10, 8.
    assert ids(to_drop(taken, Retention(daily=3))) == [
        n for n in range(1, 13) if n not in (8, 10, 12)
    ]
    kept_weekly = {b.id for b in taken} - {b.id for b in to_drop(taken, Retention(weekly=2))}
    assert 12 in kept_weekly and len(kept_weekly) == 2
    assert ids(to_drop(taken, Retention(last=1, daily=2))) == [
        n for n in range(1, 13) if n not in (10, 12)
    ]

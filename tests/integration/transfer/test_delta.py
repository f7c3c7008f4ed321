"""`p2v copy SRC DST --overwrite` onto an earlier copy: only what changed is written."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_programs
from tests.integration.transfer.disks import MiB, digest, make_disk, p2v, scattered

SIZE = 64 * MiB
BLOCK = 4 * MiB
CHANGED = [2, 7, 13]  # blocks of the source written between two copies


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_programs("qemu-img", "qemu-nbd")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.raw"
    make_disk(path, SIZE, scattered(SIZE, 10, 1536 * 1024))
    return path


def copy_again(source: Path, target: Path, *options: str) -> tuple[dict[str, Any], str]:
    """`p2v copy --overwrite --json`: its result, and what it said on stderr."""
    done = p2v("copy", "--json", "--overwrite", *options, str(source), str(target))
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[-1]["event"] == "done"
    return events[-1], done.stderr


def change_blocks(path: Path, blocks: list[int]) -> None:
    rng = random.Random(11)
    with open(path, "r+b") as f:
        for block in blocks:
            f.seek(block * BLOCK + 300 * 1024)
            f.write(rng.randbytes(200 * 1024))


@pytest.mark.parametrize("name", ["copy.raw", "copy.qcow2"])
def test_a_copy_into_an_earlier_copy_writes_only_the_blocks_that_changed(
    source: Path, tmp_path: Path, name: str
) -> None:
    target = tmp_path / name
    first, said = copy_again(source, target)
    assert first["unchanged"] == 0 and "holds job" not in said
    assert first["target_identity"]["size"] == target.stat().st_size

    change_blocks(source, CHANGED)
    second, said = copy_again(source, target, "--verify")
    assert f"holds job {first['job']}'s copy, unchanged since" in said
    assert 0 < second["copied"] <= len(CHANGED) * BLOCK
    assert second["unchanged"] >= SIZE - len(CHANGED) * BLOCK
    assert second["verified"] is True
    assert second["digest"] == digest(source) == digest(target) != first["digest"]

    # Nothing changed since: nothing is written, and the target's identity holds.
    before = target.stat().st_mtime_ns
    third, said = copy_again(source, target)
    assert f"holds job {second['job']}'s copy" in said
    assert (third["copied"], third["zeroed"], third["unchanged"]) == (0, 0, SIZE)
    assert third["digest"] == second["digest"] == digest(target)
    assert target.stat().st_mtime_ns == before


@pytest.mark.parametrize("change", ["touched", "written"])
def test_a_target_changed_since_the_earlier_copy_is_copied_in_full(
    source: Path, tmp_path: Path, change: str
) -> None:
    target = tmp_path / "copy.raw"
    copy_again(source, target)
    if change == "touched":
        os.utime(target)
    else:  # a byte where the source has not changed: trusting the old digest would keep it
        with open(target, "r+b") as f:
            f.seek(BLOCK * 5 + 1)
            f.write(b"\x99")
    again, said = copy_again(source, target)
    assert "holds job" not in said
    assert again["unchanged"] == 0
    assert again["digest"] == digest(source) == digest(target)


def test_a_copy_of_another_source_into_the_target_is_not_taken_for_it(
    source: Path, tmp_path: Path
) -> None:
    target = tmp_path / "copy.raw"
    copy_again(source, target)
    other = tmp_path / "other.raw"
    make_disk(other, SIZE, scattered(SIZE, 4, MiB, seed=9), seed=9)
    copy_again(other, target)  # the target now holds `other`, unchanged since
    back, said = copy_again(source, target)
    assert "holds job" not in said and back["unchanged"] == 0
    assert digest(target) == digest(source)

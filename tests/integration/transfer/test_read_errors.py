"""Read errors injected for real by nbdkit's error filter."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2v.jobs.journal import Journal
from tests.conftest import require_programs
from tests.integration.transfer.disks import (
    MiB,
    copy_json,
    digest,
    make_disk,
    nbdkit_with_bad_sectors,
    nbdkit_with_errors,
    p2v,
    scattered,
)

SIZE = 256 * MiB


@pytest.fixture
def source(tmp_path: Path) -> Path:
    require_programs("nbdkit")
    path = tmp_path / "source.raw"
    # Many small chunks in separate blocks: hundreds of reads, so errors do happen.
    make_disk(path, SIZE, scattered(SIZE, 400, 64 * 1024))
    return path


def test_transient_errors_are_retried_and_the_copy_is_exact(source: Path, tmp_path: Path) -> None:
    before = digest(source)
    with nbdkit_with_errors(source, tmp_path / "flaky.sock", "5%") as uri:
        done = copy_json(uri, str(tmp_path / "out.raw"))
    assert done["retried"] > 0
    assert done["digest"] == before and done["bad"] == []
    assert (tmp_path / "out.raw").read_bytes() == source.read_bytes()
    assert digest(source) == before


def test_unreadable_data_fails_the_job_naming_the_offsets(source: Path, tmp_path: Path) -> None:
    with nbdkit_with_errors(source, tmp_path / "bad.sock", "100%") as uri:
        failed = p2v("copy", uri, str(tmp_path / "out.raw"), check=False)
    assert failed.returncode == 5
    assert "Input/output error at byte ranges" in failed.stderr
    assert "--rescue" in failed.stderr
    job = failed.stderr.split("p2v copy --resume ")[1].split("`")[0]
    journal = Journal()
    assert journal.get(job).state == "failed"
    journal.close()


def test_rescue_fills_unreadable_ranges_with_zeros_and_lists_them(
    source: Path, tmp_path: Path
) -> None:
    before = digest(source)
    with nbdkit_with_errors(source, tmp_path / "bad.sock", "100%") as uri:
        done = copy_json(uri, str(tmp_path / "out.raw"), "--rescue")
    chunks = scattered(SIZE, 400, 64 * 1024)
    assert [tuple(r) for r in done["bad"]] == chunks  # every data piece, exactly
    assert (tmp_path / "out.raw").read_bytes() == bytes(SIZE)
    journal = Journal()
    assert journal.bad_ranges(done["job_id"]) == chunks
    assert journal.get(done["job_id"]).state == "done"
    journal.close()
    assert digest(source) == before


def test_rescue_loses_only_the_sectors_that_fail(source: Path, tmp_path: Path) -> None:
    """Bad sectors inside data blocks, not aligned to anything larger than a sector:
    only they are zero-filled and listed, as ddrescue would; the data around them
    (the rest of their 64 KiB piece and 4 MiB block) is copied."""
    chunks = scattered(SIZE, 400, 64 * 1024)
    first, second = chunks[10][0], chunks[200][0]
    bad = [(first + 16 * 1024, 32 * 1024), (second + 512, 512), (second + 4096, 1024)]
    with nbdkit_with_bad_sectors(source, tmp_path / "bad.sock", bad) as uri:
        done = copy_json(uri, str(tmp_path / "out.raw"), "--rescue")
    assert [tuple(r) for r in done["bad"]] == bad
    expected = bytearray(source.read_bytes())
    for offset, length in bad:
        expected[offset : offset + length] = bytes(length)
    assert (tmp_path / "out.raw").read_bytes() == expected
    journal = Journal()
    assert journal.bad_ranges(done["job_id"]) == bad
    journal.close()

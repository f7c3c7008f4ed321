import subprocess

import pytest

from p2v.errors import InputError
from p2v.jobs.journal import Journal


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


def test_a_job_keeps_its_blocks_and_bad_ranges_across_reopening(tmp_path, journal):
    job = journal.create("copy", {"request": {"source": "a"}, "size": 10})
    journal.record_blocks(job.id, [(0, b"x" * 32), (2, None)], [(4096, 512)])
    journal.close()
    again = Journal(tmp_path / "journal.sqlite")
    assert again.blocks(job.id) == {0: b"x" * 32, 2: None}
    assert again.bad_ranges(job.id) == [(4096, 512)]
    assert again.get(job.id).params["size"] == 10
    again.close()


def test_a_running_job_whose_process_died_is_interrupted(journal):
    job = journal.create("copy", {})
    assert journal.get(job.id).status == "running"
    dead = subprocess.Popen(["true"])
    dead.wait()
    journal.db.execute("UPDATE jobs SET pid = ? WHERE id = ?", (dead.pid, job.id))
    assert journal.get(job.id).status == "interrupted"


def test_finish_and_fail_are_recorded(journal):
    job = journal.create("copy", {})
    journal.fail(job.id, "disk full")
    assert (journal.get(job.id).state, journal.get(job.id).error) == ("failed", "disk full")
    journal.claim(job.id)
    journal.finish(job.id, {"digest": "d"})
    record = journal.get(job.id)
    assert (record.state, record.result, record.error) == ("done", {"digest": "d"}, None)
    assert [j.id for j in journal.jobs()] == [job.id]


def test_unknown_job_is_a_clear_error(journal):
    with pytest.raises(InputError, match="no job 'copy-nope'"):
        journal.get("copy-nope")

import subprocess

import pytest

from p2v.errors import BusyError, InputError
from p2v.jobs.journal import Journal, vm_lock
from p2v.jobs.owner import boot_id, start_ticks, this_process


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


def test_the_last_done_job_is_found_by_its_parameters(journal):
    def copy(source, target, created, done=True):
        job = journal.create("copy", {"request": {"source": source, "target": target}})
        journal.db.execute("UPDATE jobs SET created = ? WHERE id = ?", (created, job.id))
        if done:
            journal.finish(job.id, {"digest": "d"})
        return job.id

    older = copy("a", "b", 1)
    newer = copy("a", "b", 2)
    copy("a", "b", 3, done=False)  # failed or running: not done
    copy("a", "c", 4)
    copy("x", "b", 5)
    want = {"request.source": "a", "request.target": "b"}
    found = journal.last_done("copy", want)
    assert found is not None and found.id == newer != older
    assert journal.last_done("convert", want) is None
    assert journal.last_done("copy", {"request.source": "a", "request.target": "d"}) is None


def test_unknown_job_is_a_clear_error(journal):
    with pytest.raises(InputError, match="no job 'copy-nope'"):
        journal.get("copy-nope")


@pytest.fixture
def other_process():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def held_by(journal, job_id, proc, boot=None):
    """Make `proc` the job's process, as if it had started the job (on `boot`)."""
    journal.db.execute(
        "UPDATE jobs SET state = 'running', owner_boot = ?, pid = ?, owner_start = ? WHERE id = ?",
        (boot or boot_id(), proc.pid, start_ticks(proc.pid), job_id),
    )


def test_a_job_another_live_process_runs_cannot_be_claimed(journal, other_process):
    job = journal.create("copy", {})
    held_by(journal, job.id, other_process)
    with pytest.raises(BusyError, match=rf"job {job.id} is still running in process "
                       rf"{other_process.pid} \(running since "):  # fmt: skip
        journal.claim(job.id, "copy")
    with pytest.raises(BusyError):
        journal.resumable(job.id, "copy")
    assert journal.get(job.id).owner.pid == other_process.pid  # left as it was


def test_a_job_whose_process_ran_on_an_earlier_boot_is_claimed(journal, other_process):
    """The power cut: the pid the job recorded runs again, but on another boot."""
    job = journal.create("copy", {})
    held_by(journal, job.id, other_process, boot="boot before the power cut")
    assert journal.get(job.id).status == "interrupted"
    claimed = journal.claim(job.id, "copy")
    assert (claimed.state, claimed.owner) == ("running", this_process())


def test_claiming_takes_a_failed_job_over_and_refuses_a_done_one(journal):
    job = journal.create("copy", {})
    journal.fail(job.id, "disk full")
    assert journal.claim(job.id, "copy").error is None
    with pytest.raises(InputError, match="is a copy job, not a convert job"):
        journal.claim(job.id, "convert")
    journal.finish(job.id, {})
    with pytest.raises(InputError, match="already done"):
        journal.claim(job.id, "copy")


def test_a_job_made_for_another_names_it_as_its_parent(journal):
    conversion = journal.create("convert", {})
    first = journal.create("copy", {"disk": "sda"}, parent=conversion.id)
    second = journal.create("copy", {"disk": "sdb"}, parent=conversion.id)
    alone = journal.create("copy", {})
    assert journal.get(first.id).parent == conversion.id
    assert alone.parent is None and conversion.parent is None
    assert [j.id for j in journal.children(conversion.id)] == [first.id, second.id]
    assert journal.children(alone.id) == []
    assert journal.get(second.id).to_json()["parent"] == conversion.id


HOST_A, HOST_B = "8f0c3e4a-0000-4000-8000-00000000000a", "8f0c3e4a-0000-4000-8000-00000000000b"
WEB1_UUID = "5d2a1f6e-1111-4111-8111-000000000001"
WEB1 = vm_lock(HOST_A, WEB1_UUID, "web1 on qemu+tcp://10.0.0.2/system")


def test_a_virtual_machine_is_named_by_its_hosts_uuid_and_its_own():
    assert WEB1.key == f"vm:{HOST_A}/{WEB1_UUID}"
    # However the host is reached, the same machine is the same lock.
    assert vm_lock(HOST_A, WEB1_UUID, "web1 on qemu:///system").key == WEB1.key


def test_a_lock_is_its_jobs_until_the_job_ends(journal):
    job = journal.create("convert", {})
    journal.lock(WEB1, job.id)
    journal.lock(WEB1, job.id)  # again, as a resumed job does
    assert journal.locks(job.id) == [WEB1.label]
    journal.fail(job.id, "boom")
    assert journal.locks(job.id) == []
    journal.claim(job.id)
    journal.lock(WEB1, job.id)
    journal.finish(job.id, {})
    assert journal.locks(job.id) == []


def test_a_lock_held_by_a_running_job_is_refused_naming_it(journal, other_process):
    first = journal.create("convert", {})
    journal.lock(WEB1, first.id)
    held_by(journal, first.id, other_process)
    second = journal.create("convert", {})
    with pytest.raises(BusyError) as refused:
        journal.lock(WEB1, second.id)
    assert str(refused.value).startswith(
        f"{WEB1.label} is locked by job {first.id} (a convert job), still running in process "
        f"{other_process.pid} (running since "
    )
    # Another VM on that host, and one with that UUID on another host.
    journal.lock(vm_lock(HOST_A, "5d2a1f6e-1111-4111-8111-000000000002", "web2"), second.id)
    journal.lock(vm_lock(HOST_B, WEB1_UUID, "web1 on b"), second.id)
    assert journal.locks(first.id) == [WEB1.label]


def test_a_lock_whose_job_lost_its_process_is_free(journal, other_process):
    first = journal.create("convert", {})
    journal.lock(WEB1, first.id)
    held_by(journal, first.id, other_process, boot="boot before the power cut")
    second = journal.create("convert", {})
    journal.lock(WEB1, second.id)
    assert (journal.locks(first.id), journal.locks(second.id)) == ([], [WEB1.label])


def test_an_interrupted_job_whose_libvirt_operation_may_run_keeps_its_lock(journal, other_process):
    first = journal.create("migrate", {}, resumable=True)
    journal.lock(WEB1, first.id)
    journal.settling(first.id, "migrate")
    held_by(journal, first.id, other_process, boot="boot before the power cut")
    assert journal.get(first.id).status == "interrupted"
    second = journal.create("migrate", {})
    with pytest.raises(BusyError) as refused:
        journal.lock(WEB1, second.id)
    assert str(refused.value) == (
        f"{WEB1.label} is locked by job {first.id} (a migrate job), interrupted while "
        f"libvirt may still run its step 'migrate': `p2v migrate --resume {first.id}` "
        "settles it"
    )
    journal.settling(first.id, None)  # settled (a cancel): the lock is free
    journal.lock(WEB1, second.id)

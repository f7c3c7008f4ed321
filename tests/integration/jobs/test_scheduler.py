"""`p2v scheduler` running real `p2v copy` commands at their time, late, never, and
again after they fail."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from p2v.jobs import schedules
from p2v.jobs.journal import JobRecord, Journal
from p2v.jobs.scheduler import SYSTEMD_RUNNING
from p2v.jobs.schedules import Schedule
from tests.integration.transfer.disks import MiB, digest, make_disk, p2v


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A journal of the test's own (a scheduler runs every schedule of its journal),
    and the directory scheduled commands are given in."""
    monkeypatch.setenv("P2V_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    make_disk(tmp_path / "source.raw", 16 * MiB, [(MiB, 3 * MiB)])
    return tmp_path


def wait_for(what: str, found: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not found():
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        time.sleep(0.2)


@contextlib.contextmanager
def scheduler(home: Path, *options: str) -> Iterator[Path]:
    """`p2v scheduler` running, once it has read the schedules; yields its output."""
    output = home / f"scheduler-{time.monotonic_ns()}.log"
    with open(output, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2v.cli", "scheduler", *options], stdout=out, stderr=out
        )
    try:
        wait_for("scheduler", lambda: "running as job" in output.read_text(), 20)
        yield output
    finally:
        proc.terminate()
        assert proc.wait(60) == 0, output.read_text()


def schedule_copy(*args: str, at: float) -> str:
    """Schedule `p2v copy ARGS` at `at` (whole seconds); its schedule id."""
    when = datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")
    return str(json.loads(p2v("copy", *args, "--at", when, "--json").stdout)["id"])


def schedule(sid: str) -> Schedule:
    journal = Journal()
    try:
        return schedules.get(journal, sid)
    finally:
        journal.close()


def runs(sid: str) -> list[tuple[JobRecord, list[JobRecord]]]:
    """The runs of a schedule, oldest first, each with the jobs it made."""
    journal = Journal()
    try:
        made = [job for job in reversed(journal.jobs(200)) if job.schedule == sid]
        return [(run, journal.children(run.id)) for run in made]
    finally:
        journal.close()


def test_a_copy_scheduled_8_s_ahead_runs_at_its_time_and_is_recorded(home: Path) -> None:
    with scheduler(home):
        # Further ahead than the tolerance below: a run made at once would be refused.
        due = int(time.time()) + 8
        sid = schedule_copy("source.raw", "target.raw", at=due)
        wait_for("run", lambda: schedule(sid).state == "done", 40)
    ((run, made),) = runs(sid)
    assert abs(run.created - due) <= 5, f"ran {run.created - due:+.1f} s from its time"
    assert (run.kind, run.state, run.schedule, run.params["due"]) == ("run", "done", sid, due)
    ((copy,),) = [made]
    assert (copy.kind, copy.state, copy.parent) == ("copy", "done", run.id)
    assert copy.result is not None
    assert copy.result["digest"] == digest(home / "source.raw") == digest(home / "target.raw")
    assert run.result == {"exit": 0, "jobs": [copy.id], "log": run.params["log"]}
    done = schedule(sid)
    assert (done.next_run, done.last_job) == (None, run.id)
    assert done.last_outcome is not None and done.last_outcome.startswith("done at ")


def test_a_cancelled_schedule_does_not_run_and_a_second_scheduler_is_refused(
    home: Path,
) -> None:
    with scheduler(home):
        due = int(time.time()) + 6
        sid = schedule_copy("source.raw", "target.raw", at=due)
        second = p2v("scheduler", check=False, timeout=30)  # meanwhile: one per journal
        assert second.returncode == 9 and "a scheduler already runs on " in second.stderr
        time.sleep(max(0.0, due - 3 - time.time()))  # it has read the schedule and placed it
        p2v("schedule", "cancel", sid)
        time.sleep(max(0.0, due + 4 - time.time()))
    assert runs(sid) == []
    assert not (home / "target.raw").exists()
    assert schedule(sid).state == "cancelled"


def test_runs_due_while_no_scheduler_ran_are_made_within_the_grace_else_missed(
    home: Path,
) -> None:
    now = int(time.time())
    missed = schedule_copy("source.raw", "missed.raw", at=now + 2)
    late = schedule_copy("source.raw", "late.raw", at=now + 7)
    time.sleep(max(0.0, now + 9 - time.time()))  # both went by: 7 s and 2 s ago
    started = time.time()
    with scheduler(home, "--grace", "5"):
        wait_for("late run", lambda: schedule(late).state == "done", 20)
        wait_for("missed run", lambda: schedule(missed).state == "done", 5)
    ((run, (copy,)),) = runs(late)
    assert run.state == "done" and run.created - started < 5  # made when it started
    assert copy.result is not None and copy.result["digest"] == digest(home / "late.raw")
    ((gone, made),) = runs(missed)
    assert (gone.state, made) == ("missed", [])
    assert gone.error is not None and "more than the scheduler's --grace 5 s" in gone.error
    assert not (home / "missed.raw").exists()
    outcome = schedule(missed).last_outcome
    assert outcome is not None and outcome.startswith("missed at ") and gone.id in outcome
    assert "last: missed at " in p2v("schedule", "list").stdout


def test_a_failing_run_is_tried_again_later_and_later_then_paused_with_why(home: Path) -> None:
    sid = schedule_copy("source.raw", "target.raw", at=int(time.time()) + 2)
    (home / "source.raw").unlink()  # after it was scheduled
    with scheduler(home, "--retries", "2", "--retry-delay", "1"):
        wait_for("paused schedule", lambda: schedule(sid).state == "paused", 30)
    made = runs(sid)
    assert [(run.state, jobs) for run, jobs in made] == [("failed", [])] * 3
    assert all(run.error == "source source.raw: no such file or block device" for run, _ in made)
    starts = [run.created for run, _ in made]
    assert starts[1] - starts[0] >= 0.9 and starts[2] - starts[1] >= 1.9  # 1 s, then 2 s
    paused = schedule(sid)
    assert paused.reason == (
        "paused after 3 failed runs in a row; the last: source source.raw: no such file "
        "or block device"
    )
    assert f"reason: {paused.reason}" in p2v("schedule", "list").stdout


def test_a_run_past_its_time_limit_is_stopped_and_tried_again_by_resuming_its_copy(
    home: Path,
) -> None:
    make_disk(home / "slow.raw", 16 * MiB, [(0, 16 * MiB)])
    sid = schedule_copy("slow.raw", "target.raw", "--bwlimit", "1M", at=int(time.time()) + 2)
    with scheduler(home, "--run-timeout", "3", "--retries", "1", "--retry-delay", "1") as out:
        wait_for("the schedule done", lambda: schedule(sid).state == "done", 60)
    (run, (copy,)), (again, _) = runs(sid)
    assert (run.state, run.error) == ("failed", "stopped after --run-timeout 3 s")
    assert again.state == "done"
    # Tried again by going on with the copy that was stopped, not by a new one.
    assert again.what == f"p2v copy --resume {copy.id} (schedule {sid}, tried again)"
    assert f"started: p2v copy --resume {copy.id}" in out.read_text()
    done = json.loads(p2v("history", copy.id, "--json").stdout)
    assert done["state"] == "done" and done["result"]["resumed"] > 0
    assert digest(home / "target.raw") == digest(home / "slow.raw")


def test_install_where_systemd_is_absent_says_so_and_runs_in_the_foreground(home: Path) -> None:
    if SYSTEMD_RUNNING.is_dir():
        pytest.skip("systemd runs here: --install would install a real service")
    with scheduler(home, "--install") as output:
        said = output.read_text()
    assert "systemd is absent (/run/systemd/system does not exist): no service installed; " \
        "the scheduler runs in the foreground" in said  # fmt: skip


def test_after_a_kill_9_the_next_scheduler_waits_for_the_orphaned_run_never_beside_it(
    home: Path,
) -> None:
    make_disk(home / "slow.raw", 8 * MiB, [(0, 8 * MiB)])
    when = datetime.fromtimestamp(int(time.time()) + 2).astimezone().isoformat(timespec="seconds")
    sid = json.loads(p2v("copy", "slow.raw", "target.raw", "--overwrite", "--bwlimit", "2M",
                         "--at", when, "--every", "2s", "--json").stdout)["id"]  # fmt: skip
    output = home / "first.log"
    with open(output, "w") as out:
        first = subprocess.Popen([sys.executable, "-m", "p2v.cli", "scheduler"],
                                 stdout=out, stderr=out)  # fmt: skip
    try:
        wait_for("a run's copy", lambda: any(jobs for _, jobs in runs(sid)), 20)
    finally:
        first.kill()  # -9: nothing recorded on the way out
        first.wait()
    ((orphan, (copy,)),) = runs(sid)
    with scheduler(home) as out:
        wait_for("a run after the orphan", lambda: len(runs(sid)) >= 2, 40)
        said = out.read_text()
    p2v("schedule", "cancel", sid)
    made = runs(sid)
    assert made[0][0].error == f"the scheduler stopped (killed); its command goes on as {copy.id}"
    assert f"goes on as {copy.id}" in said
    ended = Journal().get(copy.id)
    assert ended.state == "done"  # the orphaned copy went on to its end
    assert made[1][0].created >= ended.updated - 0.5, "a run was made beside the orphan"

"""The step runner: steps recorded, done ones skipped on resume, what a step builds on
run again, a failure recorded one way, child jobs gone on with, and locks kept while
a libvirt operation may outlive the process."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from p2v.errors import BusyError, InputError
from p2v.jobs.journal import Journal, Lock
from p2v.jobs.runner import Kind, Run, Step

KIND = Kind(
    "copy",
    lambda params, result: f"{params['name']} ({result.get('size', '?')})",
    lambda result: f"{result.get('size')} bytes" if result else None,
)


@pytest.fixture
def journal(tmp_path: Path) -> Any:
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


class Work:
    """Steps that count how often they ran and fail when told to."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.fail: set[str] = set()
        self.there = True  # what the "made" step made still exists

    def step(self, name: str, **kw: Any) -> Step:
        def do() -> dict[str, Any]:
            self.ran.append(name)
            if name in self.fail:
                raise InputError(f"{name} broke")
            return {"by": name}

        return Step(name, do, **kw)

    def drive(self, run: Run) -> dict[str, Any]:
        run(self.step("check", again=True))
        run(self.step("plan"))
        run(self.step("made", needs=("plan",), still=lambda _: self.there))
        run(self.step("define", needs=("made",)))
        return {"size": 42}


def test_a_job_records_each_step_and_its_end(journal: Journal) -> None:
    work, said = Work(), []
    run = Run.start(KIND, {"name": "web1"}, journal, said.append)
    assert run.execute(lambda: work.drive(run)) == {"size": 42}
    job = journal.get(run.job_id)
    assert (job.state, job.what, job.outcome) == ("done", "web1 (42)", "42 bytes")
    assert job.resume == f"p2v copy --resume {run.job_id}"
    steps = journal.steps(run.job_id)
    assert [(s["name"], s["state"], s["detail"]) for s in steps] == [
        ("check", "done", {"by": "check"}),
        ("plan", "done", {"by": "plan"}),
        ("made", "done", {"by": "made"}),
        ("define", "done", {"by": "define"}),
    ]
    assert said == ["check ...", "plan ...", "made ...", "define ..."]


def test_a_resumed_job_skips_what_is_done_and_runs_again_what_builds_on_a_rerun(
    journal: Journal,
) -> None:
    work = Work()
    work.fail = {"define"}
    run = Run.start(KIND, {"name": "web1"}, journal, lambda _: None)
    with pytest.raises(InputError):
        run.execute(lambda: work.drive(run))
    job = journal.get(run.job_id)
    assert (job.state, job.error) == ("failed", "define broke")
    assert journal.steps(run.job_id)[-1]["detail"] == {"error": "define broke"}

    work.ran, work.fail = [], set()
    again = Run.resume(KIND, run.job_id, journal, lambda _: None)
    again.execute(lambda: work.drive(again))
    assert work.ran == ["check", "define"]  # plan and made were done
    assert journal.get(run.job_id).state == "done"

    # What a done step made is gone: it runs again, and so does what needs it.
    journal.fail(run.job_id, "pretend")
    work.ran, work.there = [], False
    third = Run.resume(KIND, run.job_id, journal, lambda _: None)
    third.execute(lambda: work.drive(third))
    assert work.ran == ["check", "made", "define"]
    # Steps are shown in the job's order, not by when they last ran.
    assert [s["name"] for s in journal.steps(run.job_id)] == ["check", "plan", "made", "define"]


def test_a_done_job_cannot_be_resumed_and_another_kind_is_refused(journal: Journal) -> None:
    run = Run.start(KIND, {"name": "web1"}, journal, lambda _: None)
    run.execute(lambda: {})
    with pytest.raises(InputError, match="already done"):
        Run.resume(KIND, run.job_id, journal, lambda _: None)
    other = Kind("migrate", lambda p, r: "", lambda r: None)
    with pytest.raises(InputError, match="is a copy job, not a migrate job"):
        Run.resume(other, run.job_id, journal, lambda _: None)


def test_a_failure_keeps_the_record_gathered_so_far(journal: Journal) -> None:
    run = Run.start(KIND, {"name": "web1"}, journal, lambda _: None)

    def drive() -> dict[str, Any]:
        run.record = {"size": 7}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run.execute(drive)
    job = journal.get(run.job_id)
    assert (job.state, job.error, job.result, job.outcome) == (
        "failed", "interrupted", {"size": 7}, "7 bytes"
    )  # fmt: skip


def test_a_step_goes_on_with_the_child_job_an_earlier_run_made(journal: Journal) -> None:
    children: list[str | None] = []

    def copy(run: Run, fail: bool) -> Step:
        def do() -> dict[str, Any]:
            children.append(run.child())
            if run.child() is None:
                child = journal.create("copy", {}, parent=run.job_id)
                run.adopt(child.id)
            if fail:
                raise InputError("peer gone")
            return {"digest": "d"}

        return Step("copy sda", do, needs=("plan",))

    def drive(run: Run, fail: bool, plan_again: bool = False) -> dict[str, Any]:
        run(Step("plan", lambda: {}, again=plan_again))
        run(copy(run, fail))
        return {}

    run = Run.start(KIND, {"name": "web1"}, journal, lambda _: None)
    with pytest.raises(InputError):
        run.execute(lambda: drive(run, fail=True))
    [made] = journal.children(run.job_id)
    assert journal.steps(run.job_id)[1]["detail"] == {"child": made.id, "error": "peer gone"}

    again = Run.resume(KIND, run.job_id, journal, lambda _: None)
    with pytest.raises(InputError):
        again.execute(lambda: drive(again, fail=True))
    assert children == [None, made.id]  # the second run went on with it
    assert journal.steps(run.job_id)[1]["detail"]["child"] == made.id  # kept across runs

    # Once what it was made from is made again, an earlier child is not gone on with.
    third = Run.resume(KIND, run.job_id, journal, lambda _: None)
    third.execute(lambda: drive(third, fail=False, plan_again=True))
    assert children[-1] is None and len(journal.children(run.job_id)) == 2


SETTLING = """
import sys, time
from pathlib import Path
from p2v.jobs.journal import Journal, Lock
from p2v.jobs.runner import Kind, Run, Step

journal = Journal(Path(sys.argv[1]))
kind = Kind("migrate", lambda p, r: "web1", lambda r: None)
run = Run.start(kind, {}, journal, lambda _: None)

def migrate():
    print(run.job_id, flush=True)
    time.sleep(60)  # killed here, while libvirt would go on

run.execute(lambda: (run.lock(Lock("vm:a/1", "web1 on a")),
                     run(Step("migrate", migrate, settles=True)), {})[-1])
"""


def test_a_job_killed_in_a_settling_step_keeps_its_locks(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    holder = subprocess.Popen(
        [sys.executable, "-c", SETTLING, str(path)], stdout=subprocess.PIPE, text=True
    )
    journal = Journal(path)
    try:
        assert holder.stdout is not None
        job_id = holder.stdout.readline().strip()
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        job = journal.get(job_id)
        assert (job.status, job.settling) == ("interrupted", "migrate")
        other = journal.create("migrate", {})
        with pytest.raises(BusyError, match="interrupted while libvirt may still run"):
            journal.lock(Lock("vm:a/1", "web1 on a"), other.id)
        # A resume takes the job, and its locks, over.
        run = Run.resume(Kind("migrate", lambda p, r: "", lambda r: None), job_id, journal,
                         lambda _: None)  # fmt: skip
        run.execute(lambda: (run(Step("migrate", lambda: {}, settles=True)), {})[-1])
        assert journal.get(job_id).settling is None
        journal.lock(Lock("vm:a/1", "web1 on a"), other.id)
    finally:
        holder.kill()
        holder.wait(10)
        journal.close()

"""The one step runner every job kind stands on: copy, convert and migrate, and the
snapshots, backups and clones to come.

A kind is a `Kind` (its name, which is also the verb that resumes it, and how it says
what a job is and what came of it) and a driver that runs its steps through a `Run`,
one call per step, in the order of the data flow:

    run = Run.start(KIND, params, journal, say)     # or Run.resume(KIND, job_id, ...)
    result = run.execute(lambda: drive(run))         # drive: run(Step(...)) per step

The runner records each step as it begins and ends, skips on resume what an earlier
run finished, and records the job's end one way: done with its result, or failed with
its error and `run.record` (what the kind had gathered), its locks then freed.

A Step declares once what the runner needs to know of it:
  name     unique in the job ("plan", "copy sda")
  do       the work; returns its detail (what it found or did), recorded as JSON
  needs    the earlier steps it builds on: when one of them runs again, so does it
  again    it runs on every run of the job (a check, a define, a boot check)
  still    for a done step: is its work still there (a copied target)? If not, it
           runs again
  settles  what it starts in libvirt may carry on if this process dies (a live
           migration): the job keeps its locks, interrupted or not, until a resume or
           a cancel settles it

Child jobs (a conversion's copies, a bulk clone's clones) name their parent job. The
step that makes one calls `run.adopt(child_id)` as soon as the child exists; after a
crash the step runs again and `run.child()` gives that id back, so that it goes on
with the child instead of starting another.

OpenStack's TaskFlow is the model (steps with what they need, persisted states,
resumption), not a dependency: it adds a fifth of a second to every start of `p2v`
and 30 distributions, keeps its own tables beside our journal, and reverts every done
task of a failed flow, where a failed job of ours keeps them for `--resume`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2v.jobs.journal import JobRecord, Journal, Lock

Say = Callable[[str], None]
Detail = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    name: str  # the journal's kind, and the verb: `p2v NAME --resume JOB`
    describe: Callable[[dict[str, Any], dict[str, Any]], str]  # (params, result) -> a line
    outcome: Callable[[dict[str, Any]], str | None]  # a result -> what came of it
    resumable: bool = True


@dataclass(frozen=True)
class Step:
    name: str
    do: Callable[[], Detail | None]
    needs: tuple[str, ...] = ()
    again: bool = False
    still: Callable[[Detail], bool] | None = None
    settles: bool = False


def message(error: BaseException) -> str:
    """An error as the journal records it."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return str(error) or type(error).__name__


class Run:
    """One run of a job: a new one, or a resumed one going on from its record."""

    def __init__(
        self, kind: Kind, job: JobRecord, journal: Journal, say: Say, resumed: bool
    ) -> None:
        self.kind, self.job_id, self.journal, self.say = kind, job.id, journal, say
        self.params = job.params
        self.resumed = resumed
        # What earlier runs recorded of each step (done, failed, or cut short).
        self.previous = {s["name"]: s for s in journal.steps(job.id)} if resumed else {}
        self.results: dict[str, Detail] = {}  # each step done, earlier or now: its detail
        self.ran: set[str] = set()  # the steps this run ran
        self.record: dict[str, Any] = {}  # the job's result so far, kept if it fails
        self._seq = 0
        self._running: tuple[str, Detail, bool] | None = None  # name, detail, fresh

    @classmethod
    def start(
        cls,
        kind: Kind,
        params: dict[str, Any],
        journal: Journal,
        say: Say,
        parent: str | None = None,
    ) -> Run:
        job = journal.create(
            kind.name, params, parent, what=kind.describe(params, {}), resumable=kind.resumable
        )
        return cls(kind, job, journal, say, resumed=False)

    @classmethod
    def resume(cls, kind: Kind, job_id: str, journal: Journal, say: Say) -> Run:
        """Take over a failed or interrupted job of `kind` (BusyError when another
        process runs it)."""
        return cls(kind, journal.claim(job_id, kind.name), journal, say, resumed=True)

    # -- the job ------------------------------------------------------------

    def execute(self, drive: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run the job's steps (`drive`) and record how it ended: its result, or its
        error with `record`. The error goes on to the caller."""
        try:
            result = drive()
        except BaseException as error:
            self.fail(error)
            raise
        self.journal.finish(
            self.job_id, result, self.kind.outcome(result), self.kind.describe(self.params, result)
        )
        return result

    def fail(self, error: BaseException) -> None:
        """Record the job as failed (what `execute` does when its steps raise)."""
        outcome = self.kind.outcome(self.record) if self.record else None
        self.journal.fail(self.job_id, message(error), self.record or None, outcome)

    def lock(self, lock: Lock) -> None:
        """Hold `lock` until the job ends (BusyError when another job holds it)."""
        self.journal.lock(lock, self.job_id)

    # -- its steps --------------------------------------------------------------

    def pending(self, step: Step) -> bool:
        """Whether `step` runs in this run: not done before, or to be done again."""
        before = self.previous.get(step.name)
        if step.again or before is None or before["state"] != "done":
            return True
        if self.ran.intersection(step.needs):
            return True
        return step.still is not None and not step.still(before["detail"] or {})

    def __call__(self, step: Step) -> Detail:
        """Run `step`, or take what an earlier run of the job found: its detail."""
        self._seq += 1
        if not self.pending(step):
            self.results[step.name] = self.previous[step.name]["detail"] or {}
            return self.results[step.name]
        detail: Detail = {}
        # An earlier run's child is gone on with, unless what it was made from is new.
        fresh = bool(self.ran.intersection(step.needs))
        if not fresh and (child := self._earlier_child(step.name)):
            detail["child"] = child  # kept until this run makes or adopts its own
        self.say(f"{step.name} ...")
        self.journal.step_started(self.job_id, step.name, self._seq, detail)
        if step.settles:
            self.journal.settling(self.job_id, step.name)
        self._running = (step.name, detail, fresh)
        try:
            detail.update(step.do() or {})
        except BaseException as error:
            detail["error"] = message(error)
            self.journal.step_ended(self.job_id, step.name, detail, failed=True)
            raise
        finally:
            self._running = None
            if step.settles:  # ended here, one way or the other: nothing runs on
                self.journal.settling(self.job_id, None)
        self.journal.step_ended(self.job_id, step.name, detail)
        self.results[step.name] = detail
        self.ran.add(step.name)
        return detail

    def remember(self, **detail: Any) -> None:
        """Record now, in the running step, what it has learnt so far: kept if the
        process dies before the step ends."""
        assert self._running is not None, "remember() outside a step"
        name, recorded, _ = self._running
        recorded.update(detail)
        self.journal.step_detail(self.job_id, name, recorded)

    def adopt(self, child: str) -> None:
        """The running step has made child job `child` (or gone on with it)."""
        self.remember(child=child)

    def child(self) -> str | None:
        """The child job an earlier run of the running step made, to go on with; None
        when there is none, or when a step it needs ran again (its input is new)."""
        assert self._running is not None, "child() outside a step"
        name, _, fresh = self._running
        return None if fresh else self._earlier_child(name)

    def found(self, name: str) -> Detail:
        """What step `name` found: in this run, else in an earlier one ({} if none)."""
        return self.results.get(name) or self.earlier(name)

    def earlier(self, name: str) -> Detail:
        """What an earlier run recorded for step `name`, done or not ({} if none)."""
        return (self.previous.get(name) or {}).get("detail") or {}

    def _earlier_child(self, name: str) -> str | None:
        detail = self.earlier(name)
        child = detail.get("child") or detail.get("copy_job")  # copy_job: before schema 4
        return str(child) if child else None

"""`p2v scheduler`: runs the journal's schedules when they are due.

Built on APScheduler 3. A BackgroundScheduler holds, for each active schedule, a job
with a date trigger at its next run; an interval job reads the schedules table every
POLL seconds and adds, moves or drops those, so that schedules added, paused or
cancelled by other processes take effect. The journal stays the source of truth:
APScheduler keeps nothing of its own, and a scheduler that starts again finds every
schedule as it was left.

Each run is a job of the journal (kind "run", linked to its schedule, a child of the
scheduler's own job) that runs `python -m p2v.cli VERB ARGS...` in the schedule's
directory with PARENT_ENV naming the run, so the job the command records is the
run's child. What the command prints goes to runs/RUN.log in the state directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from p2v.errors import BusyError, ComponentError
from p2v.jobs import schedules
from p2v.jobs.journal import PARENT_ENV, Journal
from p2v.jobs.schedules import Policy, Schedule
from p2v.jobs.triggers import local_zone
from p2v.paths import state_dir
from p2v.units import format_time

POLL = 2.0  # seconds between two readings of the schedules table
STOP_GRACE = 30.0  # seconds a run stopped with SIGINT has to record where it stopped
UNIT = "p2v-scheduler.service"
SYSTEMD_RUNNING = Path("/run/systemd/system")

log = logging.getLogger(__name__)


def serve(policy: Policy, say: Callable[[str], None]) -> None:
    """Run the schedules until SIGTERM or Ctrl-C."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scheduler = Scheduler(policy, say)
    scheduler.start()
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        scheduler.stop()


class Scheduler:
    def __init__(self, policy: Policy, say: Callable[[str], None]) -> None:
        self.policy, self.say = policy, say
        self.lock = threading.Lock()  # one reading or change of the schedules at a time
        self.running: dict[str, subprocess.Popen[bytes]] = {}  # by schedule id
        self.threads: list[threading.Thread] = []  # of the runs
        # Commands of runs a scheduler killed -9 left, still going: schedule -> their job.
        self.orphans: dict[str, str] = {}
        self.stopping = False
        self.job_id = ""  # the scheduler's own job in the journal
        self.aps = BackgroundScheduler(
            timezone=local_zone(),
            # Late runs are ours to judge (Policy.grace): APScheduler runs them all.
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )

    def start(self) -> None:
        """Take the journal's scheduler lock (one scheduler per journal), then make or
        record as missed the runs due while none ran, and place the others."""
        with _journal() as journal:
            holder = journal.holder(schedules.SCHEDULER_LOCK.key)
            if holder is not None and holder.owner is not None:
                raise BusyError(
                    f"a scheduler already runs on {journal.path}: job {holder.id}, "
                    f"{holder.owner.describe()}"
                )
            job = journal.create("scheduler", {"policy": dataclasses.asdict(self.policy)},
                                 what="the scheduler")  # fmt: skip
            try:
                journal.lock(schedules.SCHEDULER_LOCK, job.id)
            except BusyError as e:  # another one started at the same moment
                journal.fail(job.id, str(e))
                raise
            self.job_id = job.id
            self._orphans(journal)
        self.aps.start()
        self.sync()
        self.aps.add_job(self.sync, IntervalTrigger(seconds=POLL), id="poll")
        self.say(f"running as job {self.job_id} on {state_dir() / 'journal.sqlite'}")

    def stop(self) -> None:
        """Stop the runs under way (each records where it stopped), then the scheduler."""
        with self.lock:
            self.stopping = True
            runs = list(self.running.values())
        for proc in runs:
            _stop(proc)
        self.aps.shutdown(wait=True)
        for thread in list(self.threads):  # each records how its run ended
            thread.join()
        with _journal() as journal:
            journal.finish(self.job_id, {"stopped": time.time()})
        self.say("stopped")

    def _orphans(self, journal: Journal) -> None:
        """The runs a scheduler killed -9 (or a power cut) left: each recorded as ended
        so; one whose command still goes on is waited for, never run beside."""
        for schedule in schedules.every(journal):
            run = journal.find(schedule.last_job) if schedule.last_job else None
            if run is None or run.kind != "run" or not run.interrupted:
                continue
            going = [c for c in journal.children(run.id) if c.status == "running"]
            if going:
                self.orphans[schedule.id] = going[0].id
                note = f"the scheduler stopped (killed); its command goes on as {going[0].id}"
            else:
                note = "the scheduler stopped (killed) while this run went on"
            journal.fail(run.id, note)
            self.say(f"{schedule.id}: {run.id}: {note}")

    def _busy(self, schedule_id: str) -> bool:
        return schedule_id in self.running or schedule_id in self.orphans

    def sync(self) -> None:
        """Read the schedules and place each active one's next run."""
        with self.lock, _journal() as journal:
            if self.stopping:
                return
            for schedule_id, job in list(self.orphans.items()):
                if (found := journal.find(job)) is None or found.status != "running":
                    del self.orphans[schedule_id]  # its command ended: the schedule goes on
            now = time.time()
            for schedule in schedules.every(journal):
                due = schedule.next_run
                waiting = schedule.state == "active" and not self._busy(schedule.id)
                if waiting and due is not None and schedules.too_late(due, now, self.policy):
                    schedule = self._missed(journal, schedule, due, now)
                self._place(schedule)

    def _place(self, schedule: Schedule) -> None:
        job = self.aps.get_job(schedule.id)
        due = schedule.next_run
        if schedule.state != "active" or due is None or self._busy(schedule.id):
            if job is not None:
                job.remove()
            return
        run_date = datetime.fromtimestamp(due, local_zone())
        if job is None or job.trigger.run_date != run_date:
            self.aps.add_job(
                self._run, DateTrigger(run_date), args=[schedule.id, due], id=schedule.id,
                name=schedule.command, replace_existing=True,
            )  # fmt: skip

    def _missed(self, journal: Journal, schedule: Schedule, due: float, now: float) -> Schedule:
        run = journal.create("run", _run_params(schedule, due), self.job_id, schedule.id,
                             what=_run_what(schedule, schedule.argv))  # fmt: skip
        outcome = (
            f"missed at {format_time(due)} ({run.id}): {now - due:.0f} s late, more than the "
            f"scheduler's --grace {self.policy.grace:g} s"
        )
        journal.missed(run.id, outcome)
        following = schedule.trigger.next_run(now)
        settled = dataclasses.replace(
            schedule, next_run=following, state="active" if following else "done"
        )
        schedules.ended(journal, settled, run.id, outcome)
        self.say(f"{schedule.id}: {outcome}")
        return schedules.get(journal, schedule.id)

    def _run(self, schedule_id: str, due: float) -> None:
        """APScheduler's call: the run goes on in a thread of its own, so that long runs
        never hold the pool that the 2 s reading of the schedules needs."""
        thread = threading.Thread(target=self._run_now, args=(schedule_id, due),
                                  name=f"run-{schedule_id}", daemon=True)  # fmt: skip
        with self.lock:
            self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()

    def _run_now(self, schedule_id: str, due: float) -> None:
        try:
            self._make_run(schedule_id, due)
        except Exception as e:  # one run's trouble must not stop the others
            log.debug("run of %s", schedule_id, exc_info=True)
            self.say(f"{schedule_id}: the run could not be made or recorded: {e}")
        self.sync()  # place its next run now, not at the next reading

    def _make_run(self, schedule_id: str, due: float) -> None:
        run = self._begin(schedule_id, due)
        if run is None:
            return
        self.say(
            f"{schedule_id}: {run.job} started: p2v {run.schedule.verb} {shlex.join(run.argv)}"
        )
        if run.proc is not None:
            code, timed_out = _wait(run.proc, self.policy.run_timeout)
            run.error = (
                f"stopped after --run-timeout {self.policy.run_timeout:g} s" if timed_out
                else None if code == 0 else _error(run.logfile, code)
            )  # fmt: skip
            run.exit = code
        self.say(f"{schedule_id}: {self._end(run)}")

    def _begin(self, schedule_id: str, due: float) -> _Run | None:
        """Record the run and start its command; None when it is not to be made."""
        with self.lock, _journal() as journal:
            schedule = schedules.get(journal, schedule_id)
            if (schedule.state != "active" or schedule.next_run != due
                    or self._busy(schedule_id) or self.stopping):  # fmt: skip
                return None  # changed since it was placed, or placed twice
            now = time.time()
            argv = _retry_argv(journal, schedule)
            job = journal.create("run", _run_params(schedule, due), self.job_id, schedule.id,
                                 what=_run_what(schedule, argv))  # fmt: skip
            run = _Run(schedule, job.id, due, now, schedule.trigger.next_run(max(now, due)),
                       Path(job.params["log"]), argv)  # fmt: skip
            schedules.started(journal, schedule, run.job, now, run.following)
            try:
                run.proc = _start(schedule, argv, run.job, run.logfile)
            except OSError as e:
                run.error = f"cannot start it in {schedule.cwd}: {e.strerror or e}"
            else:
                self.running[schedule_id] = run.proc
            return run

    def _end(self, run: _Run) -> str:
        """Record how the run ended, and what comes next for its schedule."""
        with self.lock, _journal() as journal:
            self.running.pop(run.schedule.id, None)
            now = time.time()
            result = {"exit": run.exit, "jobs": [c.id for c in journal.children(run.job)],
                      "log": str(run.logfile)}  # fmt: skip
            if run.error is None:
                journal.finish(run.job, result)
                outcome = f"done at {format_time(now)} ({run.job}, {now - run.started:.1f} s)"
            else:
                journal.fail(run.job, run.error, result)
                outcome = f"failed at {format_time(now)} ({run.job}): {run.error}"
            if self.stopping and run.error is not None:  # made again when a scheduler starts
                settled = dataclasses.replace(run.schedule, next_run=run.due)
                outcome = f"stopped with the scheduler at {format_time(now)} ({run.job})"
            else:
                settled = schedules.settle(run.schedule, run.error is None, run.error,
                                           run.following, now, self.policy)  # fmt: skip
                if run.error is not None and settled.state == "active":
                    outcome += f"; tried again at {schedules.describe_next(settled)}"
            schedules.ended(journal, settled, run.job, outcome)
            return outcome


@dataclasses.dataclass
class _Run:
    """A run under way: its schedule as it was when it began, and its job."""

    schedule: Schedule
    job: str
    due: float
    started: float
    following: float | None  # the schedule's next run after this one
    logfile: Path
    argv: list[str]  # the verb's arguments this run: the schedule's, or --resume JOB
    proc: subprocess.Popen[bytes] | None = None
    exit: int | None = None
    error: str | None = None  # None: it went well


def _run_what(schedule: Schedule, argv: list[str]) -> str:
    if argv != schedule.argv:
        return f"p2v {schedule.verb} {shlex.join(argv)} (schedule {schedule.id}, tried again)"
    return f"{schedule.command} (schedule {schedule.id})"


def _retry_argv(journal: Journal, schedule: Schedule) -> list[str]:
    """The command's arguments for this run: a run after a failed one goes on with the
    job that failed (`--resume JOB`) where its kind can, so that what it did is kept;
    otherwise the command as scheduled."""
    if not schedule.failures or not schedule.last_job:
        return schedule.argv
    for child in reversed(journal.children(schedule.last_job)):
        stopped = child.status in ("failed", "interrupted")
        if (
            child.kind == schedule.verb
            and child.resume
            and stopped
            and _got_going(journal, child.id)
        ):
            return ["--resume", child.id]
    return schedule.argv


def _got_going(journal: Journal, job_id: str) -> bool:
    """Whether a job got far enough to be gone on with: it began a step, and one that
    is not its checks, unless those ended (a job stopped in them starts afresh)."""
    steps = journal.steps(job_id)
    return bool(steps) and (steps[0]["name"] != "check" or steps[0]["state"] == "done")


def _run_params(schedule: Schedule, due: float) -> dict[str, object]:
    return {
        "schedule": schedule.id, "command": schedule.command, "cwd": schedule.cwd,
        "due": due, "attempt": schedule.failures + 1,
        "log": str(state_dir() / "runs" / f"{schedule.id}-{int(due)}-{schedule.failures}.log"),
    }  # fmt: skip


def _start(
    schedule: Schedule, argv: list[str], run_id: str, logfile: Path
) -> subprocess.Popen[bytes]:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "p2v.cli", schedule.verb, *argv],
            cwd=schedule.cwd,
            env={**os.environ, PARENT_ENV: run_id},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C meant for the scheduler is not the run's
        )


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, bool]:
    """The run's exit code, and whether it had to be stopped for taking too long."""
    try:
        return proc.wait(timeout), False
    except subprocess.TimeoutExpired:
        _stop(proc)
        return proc.returncode, True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, as Ctrl-C: a p2v job records that it was interrupted and can be resumed."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _error(logfile: Path, code: int) -> str:
    """What a failed run said: the p2v error line it ended with, else its exit code."""
    lines = logfile.read_text(errors="replace").splitlines()
    said = [line for line in lines if line.startswith("p2v: ")]
    return said[-1].removeprefix("p2v: ").removeprefix("error: ") if said else f"exit {code}"


@contextlib.contextmanager
def _journal() -> Iterator[Journal]:
    """A connection of this thread's own (sqlite3 connections stay in their thread)."""
    journal = Journal()
    try:
        yield journal
    finally:
        journal.close()


# -- systemd ---------------------------------------------------------------------


def install(options: list[str], say: Callable[[str], None]) -> bool:
    """Install and start the scheduler as a systemd service, where systemd runs; False
    (saying so) where it does not."""
    if not SYSTEMD_RUNNING.is_dir():
        say(f"systemd is absent ({SYSTEMD_RUNNING} does not exist): no service installed; "
            "the scheduler runs in the foreground")  # fmt: skip
        return False
    user = os.geteuid() != 0
    where = Path.home() / ".config/systemd/user" if user else Path("/etc/systemd/system")
    env = {"P2V_HOME": str(state_dir())}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    command = [sys.executable, "-m", "p2v.cli", "scheduler", *options]
    where.mkdir(parents=True, exist_ok=True)
    partial = where / f".{UNIT}.new"
    partial.write_text(unit_text(command, env, user))
    partial.replace(where / UNIT)
    systemctl = ["systemctl", "--user"] if user else ["systemctl"]
    for action in (["daemon-reload"], ["enable", "--now", UNIT]):
        done = subprocess.run([*systemctl, *action], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ComponentError(f"{' '.join(systemctl + action)}: {done.stderr.strip()}")
    say(f"installed {where / UNIT}; systemd runs it now and at boot "
        f"(`{' '.join(systemctl)} status {UNIT}`)")  # fmt: skip
    return True


def unit_text(command: list[str], env: dict[str, str], user: bool) -> str:
    environment = "".join(f"Environment={_quoted(f'{k}={v}')}\n" for k, v in env.items())
    return f"""\
[Unit]
Description=p2v scheduler: runs the schedules of the p2v journal
After=network-online.target
Wants=network-online.target

[Service]
ExecStart={" ".join(_quoted(arg) for arg in command)}
{environment}Restart=on-failure
RestartSec=10
# SIGTERM to the scheduler alone, which stops its runs with SIGINT so that each records
# where it stopped and can be resumed; what is left after the timeout gets SIGKILL.
KillMode=mixed
TimeoutStopSec={STOP_GRACE + 30:g}

[Install]
WantedBy={"default.target" if user else "multi-user.target"}
"""


def _quoted(word: str) -> str:
    """A word as systemd reads it on an ExecStart= or Environment= line."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not any(c in word for c in " \t\"'\\;"):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'

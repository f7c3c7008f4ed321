"""The journal: every job, its parameters, progress and outcome, in one SQLite file.

A copy records each finished block with its digest, but only once the target has
been flushed after the block's writes, so after a crash the journal never claims
more than the target really holds. Secrets never go in here: parameters name
files and URIs, never their contents.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2v.errors import BusyError, InputError
from p2v.jobs import schema
from p2v.jobs.owner import Owner, this_process
from p2v.paths import state_dir

_COLUMNS = (
    "id, kind, state, created, updated, owner_boot, pid, owner_start, parent, schedule, "
    "params, result, error, what, outcome, resume, settling"
)
# The job that a process's own jobs are part of: `p2v scheduler` names the run it
# starts a command for, so that the job the command records is a child of that run.
PARENT_ENV = "P2V_PARENT_JOB"


@dataclass
class JobRecord:
    id: str
    kind: str
    state: str  # running, failed, done; missed: a scheduled run not made in time
    created: float
    updated: float
    owner: Owner | None  # the process that runs or ran it
    parent: str | None  # the job this one is part of
    schedule: str | None  # the schedule a run job ran for
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    what: str | None = None  # the job in a line, in its kind's words
    outcome: str | None = None  # what came of it, in its kind's words
    resume: str | None = None  # the command that goes on with it
    settling: str | None = None  # its step whose libvirt operation may outlive it

    @property
    def interrupted(self) -> bool:
        """A job marked running whose process is gone (killed, crashed, rebooted)."""
        return self.state == "running" and not (self.owner and self.owner.alive())

    @property
    def status(self) -> str:
        return "interrupted" if self.interrupted else self.state

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.status,
            "created": self.created,
            "updated": self.updated,
            "parent": self.parent,
            "schedule": self.schedule,
            "owner": dataclasses.asdict(self.owner) if self.owner else None,
            "params": self.params,
            "result": self.result,
            "error": self.error,
            "what": self.what,
            "outcome": self.outcome,
            "resume": self.resume,
            "settling": self.settling,
        }


class Journal:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / "journal.sqlite"
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        schema.upgrade(self.db, self.path)

    def close(self) -> None:
        self.db.close()

    def create(
        self,
        kind: str,
        params: dict[str, Any],
        parent: str | None = None,
        schedule: str | None = None,
        *,
        what: str | None = None,
        resumable: bool = False,
    ) -> JobRecord:
        """A new job, running in this process. `parent`: the job it is part of (by
        default the one PARENT_ENV names); `schedule`: the schedule it runs for;
        `what`: the job in a line; `resumable`: `p2v KIND --resume JOB` goes on with it."""
        job_id = f"{kind}-{secrets.token_hex(4)}"
        now, me = time.time(), this_process()
        self.db.execute(
            "INSERT INTO jobs (id, kind, state, created, updated, owner_boot, pid, owner_start, "
            "parent, schedule, params, what, resume) "
            "VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, kind, now, now, me.boot, me.pid, me.start,
             parent or os.environ.get(PARENT_ENV), schedule, json.dumps(params), what or kind,
             f"p2v {kind} --resume {job_id}" if resumable else None),
        )  # fmt: skip
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        found = self.find(job_id)
        if found is None:
            raise InputError(f"no job {job_id!r} in the journal {self.path}")
        return found

    def find(self, job_id: str) -> JobRecord | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _record(row)

    def resumable(self, job_id: str, kind: str) -> JobRecord:
        """The job, when it is a `kind` job that can go on: failed or interrupted. Only
        `claim` makes it this process's own."""
        job = self.get(job_id)
        _check_resumable(job, kind, this_process())
        return job

    def claim(self, job_id: str, kind: str | None = None) -> JobRecord:
        """Take over a failed or interrupted job (of `kind`) to go on with it in this
        process. Of several processes that try at once, one gets it; the others are
        refused with BusyError, naming the process that has it."""
        me = this_process()
        with schema.transaction(self.db):  # no other writer between the check and the take
            job = self.get(job_id)
            _check_resumable(job, kind, me)
            taken = self.db.execute(
                "UPDATE jobs SET state = 'running', owner_boot = ?, pid = ?, owner_start = ?, "
                "error = NULL, updated = ? WHERE id = ? AND state = ? AND updated = ?",
                (me.boot, me.pid, me.start, time.time(), job_id, job.state, job.updated),
            ).rowcount
            assert taken == 1, f"{job_id} changed under the journal's write lock"
        return self.get(job_id)

    def jobs(self, limit: int = 50) -> list[JobRecord]:
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs ORDER BY created DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_record(row) for row in rows]

    def done(self, kind: str) -> list[JobRecord]:
        """Every done job of `kind`, oldest first."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE kind = ? AND state = 'done' ORDER BY created",
            (kind,),
        ).fetchall()
        return [_record(row) for row in rows]

    def last_done(self, kind: str, params: dict[str, Any]) -> JobRecord | None:
        """The newest done job of `kind` whose parameters hold these values, each
        named by its path in them: {"request.target": "disk.raw"}."""
        where = "".join(" AND json_extract(params, ?) = ?" for _ in params)
        values = [v for path, value in params.items() for v in (f"$.{path}", value)]
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE kind = ? AND state = 'done'{where} "
            "ORDER BY created DESC LIMIT 1",
            (kind, *values),
        ).fetchone()
        return None if row is None else _record(row)

    def children(self, job_id: str) -> list[JobRecord]:
        """The jobs that are part of this one, oldest first."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE parent = ? ORDER BY created", (job_id,)
        ).fetchall()
        return [_record(row) for row in rows]

    def finish(
        self,
        job_id: str,
        result: dict[str, Any],
        outcome: str | None = None,
        what: str | None = None,
    ) -> None:
        """The job is done (`outcome` says what came of it; `what`, when the job now
        knows itself better); the locks it held are free."""
        self._end(job_id, "done", None, result, outcome, what)

    def fail(
        self,
        job_id: str,
        error: str,
        result: dict[str, Any] | None = None,
        outcome: str | None = None,
    ) -> None:
        """The job failed, saying why, with what it had recorded; its locks are free."""
        self._end(job_id, "failed", error, result, outcome)

    def missed(self, job_id: str, reason: str) -> None:
        """A scheduled run that was not made in time, saying why."""
        self._end(job_id, "missed", reason, None)

    def _end(
        self,
        job_id: str,
        state: str,
        error: str | None,
        result: dict[str, Any] | None,
        outcome: str | None = None,
        what: str | None = None,
    ) -> None:
        with schema.transaction(self.db):
            self.db.execute(
                "UPDATE jobs SET state = ?, error = ?, result = ?, outcome = ?, "
                "what = coalesce(?, what), settling = NULL, updated = ? WHERE id = ?",
                (state, error, json.dumps(result) if result else None, outcome, what,
                 time.time(), job_id),
            )  # fmt: skip
            self.db.execute("DELETE FROM locks WHERE job = ?", (job_id,))

    def settling(self, job_id: str, step: str | None) -> None:
        """`step` starts a libvirt operation that goes on if this process dies (a live
        migration): until it is settled (None: by this process, a resume or a cancel),
        the job keeps its locks even once interrupted."""
        self.db.execute("UPDATE jobs SET settling = ? WHERE id = ?", (step, job_id))

    # -- locks ----------------------------------------------------------------

    def lock(self, lock: Lock, job_id: str) -> None:
        """Let job `job_id` alone act on what `lock` names until it ends. A lock whose
        job has ended, or whose process is gone (unless a libvirt operation of it may
        still run), is free again; one that another job holds is refused with
        BusyError, naming that job."""
        with schema.transaction(self.db):  # no other writer between the check and the take
            self.refuse_held(lock, job_id)
            self.db.execute(
                "INSERT OR REPLACE INTO locks (resource, job, taken, label) VALUES (?, ?, ?, ?)",
                (lock.key, job_id, time.time(), lock.label),
            )

    def refuse_held(self, lock: Lock, job_id: str | None = None) -> None:
        """BusyError, naming the job, when a job other than `job_id` holds `lock`: what
        `lock` checks, and what a job not yet recorded checks before it starts."""
        holder = self.holder(lock.key)
        if holder is None or holder.id == job_id:
            return
        if holder.status == "running":
            assert holder.owner is not None  # a running job has its process
            raise BusyError(
                f"{lock.label} is locked by job {holder.id} (a {holder.kind} job), still "
                f"running in {holder.owner.describe()}; try again once it ends"
            )
        raise BusyError(
            f"{lock.label} is locked by job {holder.id} (a {holder.kind} job), interrupted "
            f"while libvirt may still run its step {holder.settling!r}: "
            f"`{holder.resume or 'p2v ' + holder.kind + ' --resume ' + holder.id}` settles it"
        )

    def holder(self, key: str) -> JobRecord | None:
        """The job that holds the lock `key`, if one does: a running job, or one
        interrupted while a libvirt operation of it may still run."""
        row = self.db.execute("SELECT job FROM locks WHERE resource = ?", (key,)).fetchone()
        job = self.get(row[0]) if row else None
        if job is None or not (job.status == "running" or (job.interrupted and job.settling)):
            return None
        return job

    def locks(self, job_id: str) -> list[str]:
        """What the job holds locked, in words."""
        rows = self.db.execute(
            "SELECT coalesce(label, resource) FROM locks WHERE job = ? ORDER BY resource",
            (job_id,),
        )
        return [label for (label,) in rows]

    # -- blocks of a copy ---------------------------------------------------

    def step_started(
        self, job_id: str, name: str, seq: int, detail: dict[str, Any] | None = None
    ) -> None:
        """Step `name`, the `seq`th of its job, begins, or begins again on resume (with
        `detail`: what it keeps of its earlier run)."""
        self.db.execute(
            "INSERT OR REPLACE INTO job_steps (job, name, state, started, seq, detail) "
            "VALUES (?, ?, 'running', ?, ?, ?)",
            (job_id, name, time.time(), seq, json.dumps(detail) if detail else None),
        )

    def step_ended(
        self, job_id: str, name: str, detail: dict[str, Any], failed: bool = False
    ) -> None:
        self.db.execute(
            "UPDATE job_steps SET state = ?, finished = ?, detail = ? WHERE job = ? AND name = ?",
            ("failed" if failed else "done", time.time(), json.dumps(detail), job_id, name),
        )
        self.db.execute("UPDATE jobs SET updated = ? WHERE id = ?", (time.time(), job_id))

    def step_detail(self, job_id: str, name: str, detail: dict[str, Any]) -> None:
        """What a running step has learnt so far (a copy's job id), kept if it dies."""
        self.db.execute(
            "UPDATE job_steps SET detail = ? WHERE job = ? AND name = ?",
            (json.dumps(detail), job_id, name),
        )

    def steps(self, job_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT name, state, started, finished, detail FROM job_steps "
            "WHERE job = ? ORDER BY seq, started",
            (job_id,),
        ).fetchall()
        return [
            {"name": n, "state": st, "started": s0, "finished": s1,
             "detail": json.loads(d) if d else None}
            for n, st, s0, s1, d in rows
        ]  # fmt: skip

    def record_blocks(
        self,
        job_id: str,
        blocks: Iterable[tuple[int, bytes | None]],
        bad: Iterable[tuple[int, int]],
    ) -> None:
        with schema.transaction(self.db):
            self.db.executemany(
                "INSERT OR REPLACE INTO job_blocks (job, block, digest) VALUES (?, ?, ?)",
                ((job_id, index, digest) for index, digest in blocks),
            )
            self.db.executemany(
                "INSERT INTO job_bad_ranges (job, start, length) VALUES (?, ?, ?)",
                ((job_id, start, length) for start, length in bad),
            )
            self.db.execute("UPDATE jobs SET updated = ? WHERE id = ?", (time.time(), job_id))

    def blocks(self, job_id: str) -> dict[int, bytes | None]:
        rows = self.db.execute("SELECT block, digest FROM job_blocks WHERE job = ?", (job_id,))
        return {block: digest for block, digest in rows}

    def bad_ranges(self, job_id: str) -> list[tuple[int, int]]:
        rows = self.db.execute(
            "SELECT start, length FROM job_bad_ranges WHERE job = ? ORDER BY start", (job_id,)
        )
        return [(start, length) for start, length in rows]


@dataclass(frozen=True)
class Lock:
    """What one job at a time may act on: `key` names the thing itself, however it is
    reached; `label` says it in words."""

    key: str
    label: str


def vm_lock(host_uuid: str, domain_uuid: str, label: str) -> Lock:
    """A virtual machine, by its host's UUID and its own: `qemu:///system`,
    `qemu:///session` as root and `qemu+ssh://root@HOST/system` reach one host."""
    return Lock(f"vm:{host_uuid}/{domain_uuid}", label)


def vm_name_lock(host_uuid: str, name: str, label: str) -> Lock:
    """A domain name on a host, for a job that defines it there (a conversion) before
    the domain, and so its UUID, exists there."""
    return Lock(f"vm-name:{host_uuid}/{name}", label)


def _record(row: tuple[Any, ...]) -> JobRecord:
    (job_id, kind, state, created, updated, boot, pid, start, parent, schedule, params, result,
     error, what, outcome, resume, settling) = row  # fmt: skip
    return JobRecord(
        id=job_id,
        kind=kind,
        state=state,
        created=created,
        updated=updated,
        owner=Owner(boot, pid, start) if pid else None,
        parent=parent,
        schedule=schedule,
        params=json.loads(params),
        result=json.loads(result) if result else None,
        error=error,
        what=what,
        outcome=outcome,
        resume=resume,
        settling=settling,
    )


def _check_resumable(job: JobRecord, kind: str | None, me: Owner) -> None:
    if kind is not None and job.kind != kind:
        raise InputError(f"job {job.id} is a {job.kind} job, not a {kind} job")
    if job.state == "done":
        raise InputError(f"job {job.id} is already done (`p2v show {job.id}`)")
    holder = job.owner
    if job.state == "running" and holder is not None and holder != me and holder.alive():
        raise BusyError(
            f"job {job.id} is still running in {holder.describe()}; "
            "wait for it to end, or stop that process first"
        )

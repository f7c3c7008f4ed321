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
    "params, result, error"
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
    ) -> JobRecord:
        """A new job, running in this process. `parent`: the job it is part of (by
        default the one PARENT_ENV names); `schedule`: the schedule it runs for."""
        job_id = f"{kind}-{secrets.token_hex(4)}"
        now, me = time.time(), this_process()
        self.db.execute(
            "INSERT INTO jobs (id, kind, state, created, updated, owner_boot, pid, owner_start, "
            "parent, schedule, params) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, kind, now, now, me.boot, me.pid, me.start,
             parent or os.environ.get(PARENT_ENV), schedule, json.dumps(params)),
        )  # fmt: skip
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise InputError(f"no job {job_id!r} in the journal {self.path}")
        return _record(row)

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

    def children(self, job_id: str) -> list[JobRecord]:
        """The jobs that are part of this one, oldest first."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE parent = ? ORDER BY created", (job_id,)
        ).fetchall()
        return [_record(row) for row in rows]

    def finish(self, job_id: str, result: dict[str, Any]) -> None:
        """The job is done; the locks it held are free."""
        self._end(job_id, "done", None, result)

    def fail(self, job_id: str, error: str, result: dict[str, Any] | None = None) -> None:
        """The job failed, saying why; the locks it held are free."""
        self._end(job_id, "failed", error, result)

    def missed(self, job_id: str, reason: str) -> None:
        """A scheduled run that was not made in time, saying why."""
        self._end(job_id, "missed", reason, None)

    def _end(
        self, job_id: str, state: str, error: str | None, result: dict[str, Any] | None
    ) -> None:
        with schema.transaction(self.db):
            self.db.execute(
                "UPDATE jobs SET state = ?, error = ?, result = ?, updated = ? WHERE id = ?",
                (state, error, json.dumps(result) if result else None, time.time(), job_id),
            )
            self.db.execute("DELETE FROM locks WHERE job = ?", (job_id,))

    # -- locks ----------------------------------------------------------------

    def lock(self, resource: str, job_id: str) -> None:
        """Let job `job_id` alone act on `resource` (a vm_resource) until it ends. A lock
        whose job has ended, or whose process is gone, is free again; one that a running
        job holds is refused with BusyError, naming that job."""
        with schema.transaction(self.db):  # no other writer between the check and the take
            self.refuse_held(resource, job_id)
            self.db.execute(
                "INSERT OR REPLACE INTO locks (resource, job, taken) VALUES (?, ?, ?)",
                (resource, job_id, time.time()),
            )

    def refuse_held(self, resource: str, job_id: str | None = None) -> None:
        """BusyError, naming the job, when a running job other than `job_id` holds
        `resource` locked: what `lock` checks, and what a job not yet recorded checks
        before it starts."""
        holder = self.holder(resource)
        if holder is not None and holder.id != job_id:
            assert holder.owner is not None  # a running job has its process
            raise BusyError(
                f"{resource} is locked by job {holder.id} (a {holder.kind} job), still "
                f"running in {holder.owner.describe()}; try again once it ends"
            )

    def holder(self, resource: str) -> JobRecord | None:
        """The running job that holds `resource` locked, if one does."""
        row = self.db.execute("SELECT job FROM locks WHERE resource = ?", (resource,)).fetchone()
        job = self.get(row[0]) if row else None
        return job if job is not None and job.status == "running" else None

    def release(self, resource: str, job_id: str) -> None:
        """Free a lock before its job ends (finish and fail free them all)."""
        self.db.execute("DELETE FROM locks WHERE resource = ? AND job = ?", (resource, job_id))

    def locks(self, job_id: str) -> list[str]:
        """The resources the job holds locked."""
        rows = self.db.execute(
            "SELECT resource FROM locks WHERE job = ? ORDER BY resource", (job_id,)
        )
        return [resource for (resource,) in rows]

    # -- blocks of a copy ---------------------------------------------------

    def step_started(self, job_id: str, name: str) -> None:
        """A step of a multi-step job (a conversion) begins, or begins again on resume."""
        self.db.execute(
            "INSERT OR REPLACE INTO job_steps (job, name, state, started) "
            "VALUES (?, ?, 'running', ?)",
            (job_id, name, time.time()),
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
            "WHERE job = ? ORDER BY started",
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


def vm_resource(uri: str, name: str) -> str:
    """The lock's name for the virtual machine `name` on the libvirt host at `uri`."""
    return f"vm:{uri.rstrip('/')}/{name}"


def _record(row: tuple[Any, ...]) -> JobRecord:
    (job_id, kind, state, created, updated, boot, pid, start, parent, schedule, params, result,
     error) = row  # fmt: skip
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

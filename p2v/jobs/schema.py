"""The journal's schema, its version and the migrations from older versions.

The file records its version in SQLite's user_version. A new journal is made at
version 1 and brought forward by the same migrations as an old one, so every
migration runs on every new journal too. All the migrations a journal needs run in
one transaction with the change of its version: a journal is at its old version or
at the new one, never in between. A journal newer than this code is refused.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from p2v.errors import ComponentError, InputError
from p2v.jobs import legacy

SCHEMA_VERSION = 4

# Version 1, as the first p2v made it; migrations start from it, so it never changes.
_VERSION_1 = [
    """CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,           -- running, failed, done
    created REAL NOT NULL,
    updated REAL NOT NULL,
    pid INTEGER,
    params TEXT NOT NULL,          -- JSON
    result TEXT,                   -- JSON
    error TEXT
)""",
    """CREATE TABLE IF NOT EXISTS job_blocks (
    job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    block INTEGER NOT NULL,
    digest BLOB,                   -- NULL when the block was only partly written
    PRIMARY KEY (job, block)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS job_steps (
    job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,            -- "plan", "copy sda", "fix-ups", ...
    state TEXT NOT NULL,           -- running, done, failed
    started REAL NOT NULL,
    finished REAL,
    detail TEXT,                   -- JSON: what the step found or did
    PRIMARY KEY (job, name)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS job_bad_ranges (
    job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    start INTEGER NOT NULL,
    length INTEGER NOT NULL
)""",
]

# What brings a journal from version N-1 to N, by N: SQL statements, or a function of
# the connection for what SQL alone cannot do.
_MIGRATIONS: dict[int, list[str | Callable[[sqlite3.Connection], None]]] = {
    2: [
        # The process that runs a job is known by its host's boot, its pid and its
        # start time (clock ticks after boot), not by a pid that a reboot reuses.
        # Jobs of version 1 have none of them and are judged by their pid alone.
        "ALTER TABLE jobs ADD COLUMN owner_boot TEXT",
        "ALTER TABLE jobs ADD COLUMN owner_start INTEGER",
        # The job this one is part of: a conversion for its copies.
        "ALTER TABLE jobs ADD COLUMN parent TEXT REFERENCES jobs(id) ON DELETE SET NULL",
        "CREATE INDEX jobs_parent ON jobs (parent)",
        # A virtual machine on a host (or any resource) that one job at a time acts on.
        """CREATE TABLE locks (
    resource TEXT PRIMARY KEY,     -- "vm:URI/NAME"
    job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    taken REAL NOT NULL
) WITHOUT ROWID""",
    ],
    3: [
        # A job-making command to run later, once or again and again (p2v.jobs.schedules).
        """CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    verb TEXT NOT NULL,            -- copy, convert
    argv TEXT NOT NULL,            -- JSON: the verb's arguments, without --at/--every/--cron
    cwd TEXT NOT NULL,             -- the directory relative paths in argv are from
    trigger TEXT NOT NULL,         -- JSON: at, every, cron
    next_run REAL,                 -- NULL: no run to come
    state TEXT NOT NULL,           -- active, paused, cancelled, done
    failures INTEGER NOT NULL DEFAULT 0,  -- failed runs in a row
    reason TEXT,                   -- why it was paused
    created REAL NOT NULL,
    last_run REAL,
    last_outcome TEXT,
    last_job TEXT REFERENCES jobs(id) ON DELETE SET NULL
)""",
        # The schedule a run job ran for.
        "ALTER TABLE jobs ADD COLUMN schedule TEXT REFERENCES schedules(id) ON DELETE SET NULL",
        "CREATE INDEX jobs_schedule ON jobs (schedule)",
    ],
    4: [
        # What the job is and what came of it, in the words of its kind, written when
        # it is made and when it ends: `p2v history` prints any kind from the record.
        "ALTER TABLE jobs ADD COLUMN what TEXT",
        "ALTER TABLE jobs ADD COLUMN outcome TEXT",
        # The command that goes on with it after a failure or an interruption.
        "ALTER TABLE jobs ADD COLUMN resume TEXT",
        # The step whose libvirt operation may go on without this job's process (a
        # live migration): while it is set, the job's locks outlive its process.
        "ALTER TABLE jobs ADD COLUMN settling TEXT",
        # Steps in the order the job runs them (a step run again keeps its place).
        "ALTER TABLE job_steps ADD COLUMN seq INTEGER",
        # A lock is keyed by what it locks (a host's and a domain's UUIDs); its label
        # says it in words.
        "ALTER TABLE locks ADD COLUMN label TEXT",
        legacy.describe_jobs,
    ],
}


def version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def upgrade(db: sqlite3.Connection, path: Path) -> None:
    """Bring the journal at `path` (open as `db`, in autocommit mode) to SCHEMA_VERSION."""
    if _checked(version(db), path) == SCHEMA_VERSION:
        return
    with transaction(db):
        found = _checked(version(db), path)  # another process may have done it meanwhile
        if found == 0:
            for statement in _VERSION_1:
                db.execute(statement)
        for target in range(max(found, 1) + 1, SCHEMA_VERSION + 1):
            try:
                for step in _MIGRATIONS[target]:
                    if isinstance(step, str):
                        db.execute(step)
                    else:
                        step(db)
            except sqlite3.Error as e:
                raise ComponentError(
                    f"journal {path}: the migration from schema {found} to {SCHEMA_VERSION} "
                    f"failed at version {target} ({e}); the journal is left at schema {found}"
                ) from e
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on `db` (in autocommit mode), its write lock taken at
    once: no other process writes between its reads and its writes."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _checked(found: int, path: Path) -> int:
    if found > SCHEMA_VERSION:
        raise InputError(
            f"journal {path} was written by a newer p2v (schema {found}, this one knows "
            f"up to {SCHEMA_VERSION}); upgrade p2v to read it"
        )
    return found

"""Journals written by earlier versions of p2v open, and are migrated in one step."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from p2v.errors import ComponentError, InputError
from p2v.jobs import schema
from p2v.jobs.journal import Journal

# The schema of version 1 exactly as p2v 0.1 wrote it (p2v/journal.py), kept here as
# the record of what is in the field: the code's copy must not be what the test uses.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,           -- running, failed, done
    created REAL NOT NULL,
    updated REAL NOT NULL,
    pid INTEGER,
    params TEXT NOT NULL,          -- JSON
    result TEXT,                   -- JSON
    error TEXT
);
CREATE TABLE IF NOT EXISTS job_blocks (
    job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    block INTEGER NOT NULL,
    digest BLOB,                   -- NULL when the block was only partly written
    PRIMARY KEY (job, block)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_steps (
    job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,            -- "plan", "copy sda", "fix-ups", ...
    state TEXT NOT NULL,           -- running, done, failed
    started REAL NOT NULL,
    finished REAL,
    detail TEXT,                   -- JSON: what the step found or did
    PRIMARY KEY (job, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_bad_ranges (
    job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    start INTEGER NOT NULL,
    length INTEGER NOT NULL
);
"""


def dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def v1_journal(path: Path, extra: str = "") -> None:
    """A journal as p2v 0.1 left it: a finished copy, and a conversion whose process
    died in its copy step."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(V1_SCHEMA + extra)
    db.execute("PRAGMA user_version=1")
    copy = {"request": {"version": 1, "source": "/srv/a.raw", "target": "/srv/b.qcow2"}}
    db.execute(
        "INSERT INTO jobs VALUES ('copy-00000001', 'copy', 'done', 100.0, 160.5, 4321, ?, ?, NULL)",
        (json.dumps({**copy, "size": 8 << 20}), json.dumps({"digest": "blockhash-blake3:ab"})),
    )
    db.executemany(
        "INSERT INTO job_blocks VALUES ('copy-00000001', ?, ?)", [(0, b"d" * 32), (1, None)]
    )
    db.execute("INSERT INTO job_bad_ranges VALUES ('copy-00000001', 4096, 512)")
    db.execute(
        "INSERT INTO jobs VALUES ('convert-00000002', 'convert', 'running', 200.0, 230.0, ?, "
        '\'{"source": {}, "options": {}}\', NULL, NULL)',
        (dead_pid(),),
    )
    db.execute(
        "INSERT INTO job_steps VALUES ('convert-00000002', 'plan', 'done', 201.0, 205.0, "
        '\'{"name": "web1"}\')'
    )
    db.execute(
        "INSERT INTO job_steps VALUES ('convert-00000002', 'copy sda', 'running', 206.0, NULL, "
        '\'{"copy_job": "copy-00000001"}\')'
    )
    db.close()


def columns(path: Path, table: str) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
    finally:
        db.close()


def test_a_version_1_journal_opens_migrated_with_its_jobs_intact(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    v1_journal(path)
    journal = Journal(path)
    try:
        assert schema.version(journal.db) == schema.SCHEMA_VERSION
        copy = journal.get("copy-00000001")
        assert (copy.state, copy.created, copy.updated) == ("done", 100.0, 160.5)
        assert copy.params["request"]["target"] == "/srv/b.qcow2"
        assert copy.result == {"digest": "blockhash-blake3:ab"}
        assert journal.blocks("copy-00000001") == {0: b"d" * 32, 1: None}
        assert journal.bad_ranges("copy-00000001") == [(4096, 512)]
        convert = journal.get("convert-00000002")
        assert convert.status == "interrupted"  # judged by its pid alone, which is gone
        steps = journal.steps("convert-00000002")
        assert [(s["name"], s["state"]) for s in steps] == [
            ("plan", "done"),
            ("copy sda", "running"),
        ]
        assert steps[1]["detail"] == {"copy_job": "copy-00000001"}
        # What each job is and what came of it, written for the jobs of schema 4 on.
        assert (copy.what, copy.outcome, copy.resume) == (
            "/srv/a.raw -> /srv/b.qcow2", "blockhash-blake3:ab", "p2v copy --resume copy-00000001"
        )  # fmt: skip
        assert (convert.what, convert.outcome) == ("? from ", None)
        # New jobs go beside the old ones.
        journal.create("copy", {})
        assert len(journal.jobs()) == 3
    finally:
        journal.close()
    assert {"owner_boot", "owner_start", "parent", "schedule"} <= set(columns(path, "jobs"))
    assert columns(path, "locks") == ["resource", "job", "taken", "label"]
    assert columns(path, "schedules")[:6] == ["id", "verb", "argv", "cwd", "trigger", "next_run"]


def test_a_new_journal_is_made_by_the_migrations_of_an_old_one(tmp_path: Path) -> None:
    new, old = tmp_path / "new.sqlite", tmp_path / "old.sqlite"
    Journal(new).close()
    v1_journal(old)
    Journal(old).close()

    def tables(path: Path) -> list[tuple[str, str]]:
        db = sqlite3.connect(path)
        try:
            rows = db.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
            return [(name, sql) for name, sql in rows]
        finally:
            db.close()

    assert tables(new) == tables(old)


def test_a_migration_that_fails_leaves_the_journal_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    # A table in the way of version 2's: its migration fails part-way.
    v1_journal(path, extra="CREATE TABLE locks (x);")
    with pytest.raises(ComponentError, match="left at schema 1"):
        Journal(path)
    db = sqlite3.connect(path)
    try:
        assert schema.version(db) == 1
    finally:
        db.close()
    assert "owner_boot" not in columns(path, "jobs")  # the columns added before it too
    db = sqlite3.connect(path)
    db.execute("DROP TABLE locks")
    db.commit()
    db.close()
    Journal(path).close()  # once out of the way, it migrates
    assert "owner_boot" in columns(path, "jobs")


def test_a_journal_from_a_newer_p2v_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(InputError, match="newer p2v"):
        Journal(path)
    db = sqlite3.connect(path)
    try:
        assert schema.version(db) == schema.SCHEMA_VERSION + 1
    finally:
        db.close()

"""A backup directory's catalog: one SQLite file (`catalog.sqlite`) beside the backups.

Each backup is a folder of qcow2 files, one per disk: a full backup's stand alone, an
incremental's (or differential's) have the backup it builds on as backing file, so
QEMU reads any point of the chain as a whole disk. The catalog records, per backup,
its chain link, its checkpoint in libvirt, the VM's XML, and per disk the digest of
the whole disk at that instant; per block the backup wrote, the block's digest and
its pieces' digests (blockhash), so that the next increment, which reads only the
pieces that changed, can give every block, and so the disk, its digest again.

A backup is `partial` from its start until its files are complete and flushed, then
`complete`; only complete backups are built on, listed as points, or restored.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2v.errors import InputError
from p2v.jobs.journal import Lock
from p2v.transfer import blockhash

FILE = "catalog.sqlite"
SCHEMA_VERSION = 1
_DIGEST = 32  # bytes of a BLAKE3 piece digest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS backups (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,              -- full, incremental, differential
    parent INTEGER REFERENCES backups(id),
    state TEXT NOT NULL,             -- partial, complete
    vm TEXT NOT NULL,
    vm_uuid TEXT NOT NULL,
    uri TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    consistency TEXT,                -- frozen (guest agent), crash-consistent
    why TEXT,                        -- why it is a full backup when another was asked
    domain_xml TEXT NOT NULL,
    job TEXT
);
CREATE TABLE IF NOT EXISTS disks (
    backup INTEGER NOT NULL REFERENCES backups(id),
    target TEXT NOT NULL,
    file TEXT NOT NULL,              -- relative to the directory
    size INTEGER NOT NULL,
    digest TEXT,
    read_bytes INTEGER,
    PRIMARY KEY (backup, target)
);
CREATE TABLE IF NOT EXISTS blocks (
    backup INTEGER NOT NULL,
    target TEXT NOT NULL,
    idx INTEGER NOT NULL,
    digest BLOB NOT NULL,
    pieces BLOB,                     -- NULL: every piece reads as zeros
    PRIMARY KEY (backup, target, idx)
) WITHOUT ROWID;
"""


@dataclass
class Disk:
    target: str
    file: str
    size: int
    digest: str | None = None
    read_bytes: int | None = None


@dataclass
class Backup:
    id: int
    name: str
    kind: str
    parent: int | None
    state: str
    vm: str
    vm_uuid: str
    uri: str
    checkpoint: str
    started: float
    ended: float | None
    consistency: str | None
    why: str | None
    domain_xml: str
    job: str | None
    disks: list[Disk]

    def folder(self) -> str:
        return f"{self.id:04d}-{self.name}"


class Catalog:
    def __init__(self, directory: Path, create: bool = False) -> None:
        self.directory = directory
        path = directory / FILE
        if not path.exists() and not create:
            raise InputError(f"{directory} holds no backups ({FILE} is missing)")
        try:
            if create:
                directory.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA synchronous=FULL")  # a backup recorded is a backup kept
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise InputError(f"{path} is of a newer catalog version ({version})")
            if version == 0:  # new: made here (only a backup makes one)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.executescript(_SCHEMA)
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as error:
            raise InputError(f"{path}: not a readable backup catalog ({error})") from None
        except OSError as error:
            raise InputError(f"{directory}: {error.strerror}") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- backups --------------------------------------------------------------

    def begin(
        self,
        *,
        name: str,
        kind: str,
        parent: int | None,
        vm: str,
        vm_uuid: str,
        uri: str,
        checkpoint: str,
        why: str | None,
        domain_xml: str,
        job: str | None,
        disks: Iterable[tuple[str, int]],
    ) -> Backup:
        """Record a new backup as partial, its disks' files named (not made yet)."""
        with self._transaction():
            cur = self.db.execute(
                "INSERT INTO backups (name, kind, parent, state, vm, vm_uuid, uri, checkpoint,"
                " started, why, domain_xml, job) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (name, kind, parent, "partial", vm, vm_uuid, uri, checkpoint, time.time(), why,
                 domain_xml, job),
            )  # fmt: skip
            backup_id = int(cur.lastrowid or 0)
            folder = f"{backup_id:04d}-{name}"
            for target, size in disks:
                self.db.execute(
                    "INSERT INTO disks (backup, target, file, size) VALUES (?,?,?,?)",
                    (backup_id, target, f"{folder}/{target}.qcow2", size),
                )
        return self.get(backup_id)

    def finish(self, backup_id: int, consistency: str) -> None:
        self.db.execute(
            "UPDATE backups SET state='complete', ended=?, consistency=? WHERE id=?",
            (time.time(), consistency, backup_id),
        )

    def disk_done(self, backup_id: int, target: str, digest: str, read_bytes: int) -> None:
        self.db.execute(
            "UPDATE disks SET digest=?, read_bytes=? WHERE backup=? AND target=?",
            (digest, read_bytes, backup_id, target),
        )

    def drop(self, backup_id: int) -> None:
        """Forget a backup (its files are the caller's to delete)."""
        with self._transaction():
            for table, column in (("blocks", "backup"), ("disks", "backup"), ("backups", "id")):
                self.db.execute(f"DELETE FROM {table} WHERE {column}=?", (backup_id,))

    def merge_into_children(self, backup: Backup, children: list[Backup]) -> None:
        """`backup` forgotten, its blocks now the children's where they wrote none
        (their points read the same), the children building on what it built on."""
        with self._transaction():
            for child in children:
                self.db.execute(
                    "INSERT OR IGNORE INTO blocks (backup, target, idx, digest, pieces) "
                    "SELECT ?, target, idx, digest, pieces FROM blocks WHERE backup=?",
                    (child.id, backup.id),
                )
                if backup.parent is None:
                    why = f"made full when {backup.folder()} was dropped (retention)"
                    self.db.execute("UPDATE backups SET parent=NULL, kind='full', why=? "
                                    "WHERE id=?", (why, child.id))  # fmt: skip
                else:
                    self.db.execute("UPDATE backups SET parent=? WHERE id=?",
                                    (backup.parent, child.id))  # fmt: skip
            for table, column in (("blocks", "backup"), ("disks", "backup"), ("backups", "id")):
                self.db.execute(f"DELETE FROM {table} WHERE {column}=?", (backup.id,))

    def get(self, backup_id: int) -> Backup:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM backups WHERE id=?", (backup_id,)).fetchone()
        if row is None:
            raise InputError(f"no backup {backup_id} in {self.directory}")
        return self._backup(row)

    def backups(self, state: str | None = "complete") -> list[Backup]:
        """Oldest first; `state` None: partial ones too."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM backups WHERE ? IS NULL OR state=? ORDER BY id",
            (state, state),
        ).fetchall()
        return [self._backup(row) for row in rows]

    def find(self, name: str) -> Backup:
        """A complete backup by its name or number."""
        for backup in self.backups():
            if name in (backup.name, str(backup.id), backup.folder()):
                return backup
        raise InputError(f"no backup {name!r} in {self.directory} (`p2v backup list` shows them)")

    def chain(self, backup: Backup) -> list[Backup]:
        """`backup` and the backups it builds on, newest first, down to its full."""
        out = [backup]
        while out[-1].parent is not None:
            out.append(self.get(out[-1].parent))
        return out

    # -- blocks ---------------------------------------------------------------

    def add_blocks(
        self, backup_id: int, target: str, blocks: Iterable[tuple[int, bytes, bytes | None]]
    ) -> None:
        with self._transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO blocks (backup, target, idx, digest, pieces) "
                "VALUES (?,?,?,?,?)",
                ((backup_id, target, idx, digest, pieces) for idx, digest, pieces in blocks),
            )

    def forget_blocks(self, backup_id: int, target: str) -> None:
        self.db.execute("DELETE FROM blocks WHERE backup=? AND target=?", (backup_id, target))

    def block_digests(self, backup_id: int, target: str) -> dict[int, bytes]:
        """The blocks `backup_id` itself wrote of `target`."""
        return dict(
            self.db.execute(
                "SELECT idx, digest FROM blocks WHERE backup=? AND target=?", (backup_id, target)
            ).fetchall()
        )

    def pieces_at(self, chain: list[Backup], target: str, idx: int) -> list[bytes] | None:
        """The piece digests of block `idx` at the point `chain` ends in (newest
        first), or None when no backup of the chain holds the block (zeros)."""
        for backup in chain:
            row = self.db.execute(
                "SELECT digest, pieces FROM blocks WHERE backup=? AND target=? AND idx=?",
                (backup.id, target, idx),
            ).fetchone()
            if row is not None:
                return None if row[1] is None else split_pieces(row[1])
        return None

    def disk_digest(self, chain: list[Backup], target: str, size: int) -> str:
        """The whole disk's digest at the point `chain` ends in, from the blocks the
        chain's backups wrote (newest wins; none: zeros)."""
        blocks: dict[int, bytes] = {}
        for backup in reversed(chain):
            blocks.update(self.block_digests(backup.id, target))
        count = blockhash.block_count(size)
        return blockhash.disk_digest(
            size,
            (
                blocks.get(i) or blockhash.zero_block(blockhash.block_length(i, size))
                for i in range(count)
            ),
        )

    # -- internals ------------------------------------------------------------

    def _backup(self, row: tuple[Any, ...]) -> Backup:
        disks = [
            Disk(*d)
            for d in self.db.execute(
                "SELECT target, file, size, digest, read_bytes FROM disks WHERE backup=? "
                "ORDER BY target",
                (row[0],),
            ).fetchall()
        ]
        return Backup(*row, disks=disks)  # type: ignore[misc]

    def _transaction(self) -> Any:
        return _Transaction(self.db)


_COLUMNS = (
    "id, name, kind, parent, state, vm, vm_uuid, uri, checkpoint, started, ended, "
    "consistency, why, domain_xml, job"
)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *exc: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")


def join_pieces(pieces: Iterable[bytes]) -> bytes:
    return b"".join(pieces)


def split_pieces(blob: bytes) -> list[bytes]:
    return [blob[i : i + _DIGEST] for i in range(0, len(blob), _DIGEST)]


def stored_bytes(path: Path) -> int:
    """What a backup's file takes on disk."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def directory_lock(directory: Path | str) -> Lock:
    """The lock of a backup directory: held by a backup, a prune and a restore, since
    each of them writes or reads its files."""
    return Lock(f"backup-dir:{directory}", f"backup directory {directory}")

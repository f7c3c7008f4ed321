"""Dropping backups without breaking the chain: each backup that builds on the one
dropped is rebased onto what that one built on (`qemu-img rebase`, which copies in
what the dropped one held and the new base does not), so every remaining point reads
as it did; one that built on a dropped full becomes a full itself (a synthetic full),
with no new read from the VM.

A rebase is safe against a crash: qemu-img writes the data first and the new backing
name last, and data copied in equals what the old backing held. The catalog is
changed after the rebases, the dropped files deleted last.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

from p2v.backup.catalog import Backup, Catalog
from p2v.backup.plan import Retention, to_drop
from p2v.errors import ComponentError

Say = Callable[[str], None]


def drop(catalog: Catalog, backup: Backup, say: Say) -> None:
    """Drop `backup`, merged into the backups that build on it."""
    base = catalog.get(backup.parent) if backup.parent is not None else None
    children = [b for b in catalog.backups(state=None) if b.parent == backup.id]
    for child in children:
        for disk in child.disks:
            path = catalog.directory / disk.file
            new_base = None
            if base is not None:
                new_base = catalog.directory / next(
                    d.file for d in base.disks if d.target == disk.target
                )
            _rebase(str(path), os.path.relpath(new_base, path.parent) if new_base else "")
    catalog.merge_into_children(backup, children)
    shutil.rmtree(catalog.directory / backup.folder(), ignore_errors=True)
    made_full = [c.folder() for c in children if base is None]
    also = f"; {', '.join(made_full)} made a full backup of its own" if made_full else ""
    say(f"dropped {backup.folder()}{also}")


def _rebase(path: str, backing: str) -> None:
    cmd = ["qemu-img", "rebase", "-q", "-f", "qcow2", "-b", backing]
    if backing:
        cmd += ["-F", "qcow2"]
    try:
        done = subprocess.run([*cmd, path], capture_output=True, text=True, timeout=24 * 3600)
    except subprocess.TimeoutExpired:
        raise ComponentError(f"qemu-img rebase {path} did not end within a day") from None
    if done.returncode != 0:
        raise ComponentError(f"qemu-img rebase {path}: {done.stderr.strip()}")


def apply(catalog: Catalog, keep: Retention, say: Say) -> list[Backup]:
    """Drop what `keep` does not keep, oldest first: the backups dropped."""
    dropped = to_drop(catalog.backups(), keep)
    for backup in dropped:
        drop(catalog, catalog.get(backup.id), say)
    return dropped

"""Which backup comes next, decided before anything changes: full, incremental (from
the last backup) or differential (from the last full), and why a full one when
another was asked for. Pure: the facts come in, the choice goes out."""

from __future__ import annotations

import time
from dataclasses import dataclass

from p2v.backup.catalog import Backup
from p2v.errors import InputError
from p2v.host.virt.backups import PREFIX

MODES = ("auto", "full", "incremental", "differential")


@dataclass(frozen=True)
class Choice:
    kind: str  # full, incremental, differential
    parent: int | None  # the backup it builds on
    since: str | None  # the checkpoint its dirty bitmap starts at
    why: str | None  # why a full backup, where another was asked for


def choose(
    mode: str,
    backups: list[Backup],
    vm_uuid: str,
    disks: dict[str, int],
    checkpoints: set[str],
    broken: dict[str, str] | None = None,
) -> Choice:
    """`backups`: the directory's complete ones, oldest first; `disks`: the VM's
    target -> size now; `checkpoints`: the VM's checkpoints in libvirt; `broken`:
    those whose bitmaps libvirt cannot find, with why."""
    if backups and backups[-1].vm_uuid != vm_uuid:
        raise InputError(
            f"the directory holds backups of another machine ({backups[-1].vm}, "
            f"{backups[-1].vm_uuid}): give each VM a directory of its own"
        )
    if mode == "full":
        return Choice("full", None, None, None)
    if not backups:
        why = None if mode == "auto" else "the directory holds no backup to build on"
        return Choice("full", None, None, why)
    kind = "differential" if mode == "differential" else "incremental"
    base = backups[-1] if kind == "incremental" else _last_full(backups)
    then = {d.target: d.size for d in base.disks}
    if base.checkpoint not in checkpoints:
        why = (f"its checkpoint {base.checkpoint} is gone from the VM (removed, or the VM "
               "was defined again)")  # fmt: skip
    elif base.checkpoint in (broken or {}):
        why = (f"the bitmap of its checkpoint {base.checkpoint} is missing from the disks "
               "(a snapshot reverted since, or a disk replaced)")  # fmt: skip
    elif set(then) != set(disks):
        added, gone = sorted(set(disks) - set(then)), sorted(set(then) - set(disks))
        why = "its disks changed: " + ", ".join(
            [f"{t} added" for t in added] + [f"{t} removed" for t in gone]
        )
    elif resized := [t for t in disks if disks[t] != then[t]]:
        why = f"disk {', '.join(resized)} changed size"
    else:
        return Choice(kind, base.id, base.checkpoint, None)
    return Choice("full", None, None, f"no {kind} backup from {base.name}: {why}")


def _last_full(backups: list[Backup]) -> Backup:
    return next(b for b in reversed(backups) if b.kind == "full")


def backup_name(now: float | None = None) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now))


def checkpoint_name(backup: str, vm_uuid: str) -> str:
    """Ours by the prefix; the UUID's start keeps two VMs' checkpoints apart in
    messages and lists."""
    return f"{PREFIX}{vm_uuid[:8]}-{backup}"


@dataclass(frozen=True)
class Retention:
    last: int = 0
    daily: int = 0
    weekly: int = 0

    def __bool__(self) -> bool:
        return bool(self.last or self.daily or self.weekly)


def to_drop(backups: list[Backup], keep: Retention) -> list[Backup]:
    """The backups a retention drops, oldest first: kept are the `last` newest, the
    newest of each of the `daily` latest days and of the `weekly` latest ISO weeks
    that have backups (local time), and always the newest of all."""
    if not keep or not backups:
        return []
    newest_first = sorted(backups, key=lambda b: (b.started, b.id), reverse=True)
    kept = {newest_first[0].id} | {b.id for b in newest_first[: keep.last]}
    for count, period in ((keep.daily, "%Y-%m-%d"), (keep.weekly, "%G-W%V")):
        seen: list[str] = []
        for b in newest_first:
            when = time.strftime(period, time.localtime(b.started))
            if when not in seen and len(seen) < count:
                seen.append(when)
                kept.add(b.id)
    return [b for b in reversed(newest_first) if b.id not in kept]

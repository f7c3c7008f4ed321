"""Offline fix-ups that make a copied Linux guest boot on virtio with its identity.

Each fix-up works on a libguestfs handle whose guest filesystems are mounted (the
pipeline opens it), edits files only, keeps every original as NAME.p2v-orig, and
says what it did. None runs a program of the guest on the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BACKUP_SUFFIX = ".p2v-orig"


@dataclass
class FixupReport:
    name: str  # "initramfs", "fstab", ...
    changes: list[str] = field(default_factory=list)  # what was done, one line each
    backups: list[str] = field(default_factory=list)  # originals kept, guest paths

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "changes": self.changes, "backups": self.backups}


def keep_original(g: Any, path: str, report: FixupReport) -> None:
    """Copy a guest file to NAME.p2v-orig before its first change."""
    backup = path + BACKUP_SUFFIX
    if g.exists(path) and not g.exists(backup):
        g.cp_a(path, backup)
        report.backups.append(backup)


def replace_file(g: Any, path: str, content: bytes, report: FixupReport) -> None:
    """Write a guest file, keeping its first original beside it."""
    keep_original(g, path, report)
    g.write(path, content)

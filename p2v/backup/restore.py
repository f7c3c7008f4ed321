"""Restoring any point of a backup chain. QEMU reads a point as a whole disk (its
qcow2 with the backups it builds on as backing files); the transfer engine copies it,
and the digest must equal the one recorded when the backup was taken."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2v.backup.catalog import Backup, Catalog
from p2v.backup.chain import point
from p2v.errors import BackupMismatch, InputError
from p2v.transfer.endpoints import open_source, open_target
from p2v.transfer.engine import Transfer
from p2v.transfer.progress import QuietReporter, Reporter

Say = Callable[[str], None]


def restore(
    directory: Path,
    at: str | None,
    to: str,
    say: Say,
    reporter: Reporter | None = None,
    overwrite: bool = False,
    into_directory: bool = False,
) -> dict[str, Any]:
    """Each disk of the point `at` rebuilt at `to` (a file for a one-disk VM, else a
    directory that gets TARGET.qcow2 per disk; `into_directory`: always so), its
    digest checked."""
    with Catalog(directory) as catalog:
        backup = point(catalog, at)
        targets = _targets(backup, to, into_directory)
        out = {}
        for disk in backup.disks:
            where = targets[disk.target]
            with (
                open_source(str(directory / disk.file), input_format="qcow2") as source,
                open_target(where, disk.size, overwrite=overwrite) as target,
            ):
                (reporter or QuietReporter()).start(None, f"{disk.target} -> {where}", disk.size)
                outcome = Transfer(source, target, target_zero=target.known_zero(),
                                   reporter=reporter).run()  # fmt: skip
            if outcome.digest != disk.digest:
                raise BackupMismatch(
                    f"{where} does not hold {disk.target} as backed up in {backup.folder()}: "
                    f"digest {outcome.digest}, recorded {disk.digest} (`p2v backup verify`)"
                )
            say(f"{disk.target} of {backup.folder()} restored to {where}, digest checked")
            out[disk.target] = {"path": where, "digest": disk.digest}
    return {"backup": backup.folder(), "disks": out, "domain_xml": backup.domain_xml}


def _targets(backup: Backup, to: str, into_directory: bool) -> dict[str, str]:
    if len(backup.disks) == 1 and not into_directory:
        return {backup.disks[0].target: to}
    if not os.path.isdir(to):
        raise InputError(f"{backup.folder()} holds {len(backup.disks)} disks: --to must be a "
                         "directory, which gets TARGET.qcow2 for each")  # fmt: skip
    return {d.target: os.path.join(to, f"{d.target}.qcow2") for d in backup.disks}

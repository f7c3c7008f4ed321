"""Reading a backup directory's chain: which point a name means, every point verified
(its qcow2 structure, its backing link, its digest), the chain listed and drawn."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2v.backup.catalog import Backup, Catalog, stored_bytes
from p2v.errors import ComponentError, InputError, P2VError
from p2v.transfer.endpoints import open_source
from p2v.transfer.jobs import endpoint_digest
from p2v.transfer.progress import QuietReporter, Reporter

Say = Callable[[str], None]


def point(catalog: Catalog, at: str | None) -> Backup:
    """The backup named `at`, or the newest."""
    if at:
        return catalog.find(at)
    found = catalog.backups()
    if not found:
        raise InputError(f"{catalog.directory} holds no complete backup")
    return found[-1]


@dataclass
class Finding:
    backup: str
    target: str | None
    problem: str


def verify(directory: Path, say: Say, reporter: Reporter | None = None) -> list[Finding]:
    """Every point re-read: each file's qcow2 structure and backing link, and each
    disk's digest at each point against the catalog's. [] when all is well."""
    found: list[Finding] = []
    with Catalog(directory) as catalog:
        for backup in catalog.backups():
            for disk in backup.disks:
                path = directory / disk.file
                problem = _structure(catalog, backup, disk.target, path)
                if problem is None:
                    try:
                        with open_source(str(path), input_format="qcow2") as source:
                            (reporter or QuietReporter()).start(
                                None, f"verify {backup.folder()}/{disk.target}", disk.size
                            )
                            digest = endpoint_digest(source, reporter=reporter)
                    except (OSError, P2VError) as error:
                        problem = f"cannot be read: {error}"
                    else:
                        if digest != disk.digest:
                            problem = f"digest {digest}, recorded {disk.digest}"
                if problem:
                    found.append(Finding(backup.folder(), disk.target, problem))
                    say(f"{backup.folder()}/{disk.target}: {problem}")
                else:
                    say(f"{backup.folder()}/{disk.target}: good")
    return found


def _structure(catalog: Catalog, backup: Backup, target: str, path: Path) -> str | None:
    if not path.exists():
        return f"{path} is missing"
    info = _qemu_img("info", "--output=json", "-U", str(path))
    if isinstance(info, str):
        return info
    check = _qemu_img("check", "--output=json", "-U", str(path))
    if isinstance(check, str):
        return check
    if check.get("corruptions"):  # leaked clusters only waste room: no finding
        return f"qemu-img check: {check['corruptions']} corruptions in its qcow2 structure"
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if backup.parent is None:
        return f"has a backing file {backing}, where a full backup has none" if backing else None
    parent = catalog.get(backup.parent)
    expected = directory_file(catalog, parent, target)
    if not backing or Path(path.parent, backing).resolve() != expected.resolve():
        return f"its backing file is {backing}, not {expected} (the backup it builds on)"
    return None


def needed_bytes(directory: Path, backup: Backup) -> int:
    """The room the point's disks take once restored as qcow2 (`qemu-img measure`
    reads through the backing chain: the data of the point, not its virtual size)."""
    total = 0
    for disk in backup.disks:
        measured = _qemu_img("measure", "--output=json", "-O", "qcow2", "-f", "qcow2",
                             str(directory / disk.file))  # fmt: skip
        if isinstance(measured, str):
            raise InputError(f"{backup.folder()}/{disk.target}: {measured}")
        total += int(measured["required"])
    return total


def directory_file(catalog: Catalog, backup: Backup, target: str) -> Path:
    return catalog.directory / next(d.file for d in backup.disks if d.target == target)


def _qemu_img(*args: str) -> dict[str, Any] | str:
    try:
        done = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired:
        return f"qemu-img {args[0]} did not end within an hour"
    if done.returncode not in (0, 2, 3) or not done.stdout.strip():
        return f"qemu-img {args[0]}: {done.stderr.strip() or done.returncode}"
    try:
        out: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise ComponentError(f"qemu-img {args[0]} printed no JSON: {error}") from error
    return out


def listing(directory: Path) -> list[dict[str, Any]]:
    """The chain, oldest first: each backup's kind, link, times, sizes and digests."""
    with Catalog(directory) as catalog:
        rows = []
        for backup in catalog.backups():
            parent = catalog.get(backup.parent).folder() if backup.parent else None
            rows.append({
                "backup": backup.folder(), "name": backup.name, "kind": backup.kind,
                "parent": parent, "started": backup.started, "ended": backup.ended,
                "consistency": backup.consistency, "why_full": backup.why,
                "checkpoint": backup.checkpoint, "vm": backup.vm,
                "disks": {d.target: {"size": d.size, "digest": d.digest, "read": d.read_bytes,
                                     "stored": stored_bytes(directory / d.file)}
                          for d in backup.disks},
            })  # fmt: skip
    return rows


def graph(rows: list[dict[str, Any]]) -> list[str]:
    """`listing`'s rows as a tree, as `git log --graph` draws history: each backup under
    the one it builds on (differentials side by side under their full), with its
    kind, time, bytes read and stored; the newest marked."""
    from p2v import tree
    from p2v.units import format_size, format_time

    newest = rows[-1]["backup"] if rows else None

    def label(row: dict[str, Any]) -> str:
        read = sum(d["read"] or 0 for d in row["disks"].values())
        stored = sum(d["stored"] for d in row["disks"].values())
        mark = "  <- newest" if row["backup"] == newest else ""
        return (f"{row['backup']}  {row['kind']}  {format_time(row['started'])}  "
                f"read {format_size(read)}, stored {format_size(stored)}, "
                f"{row['consistency']}{mark}")  # fmt: skip

    return tree.draw(rows, lambda r: r["backup"], lambda r: r["parent"], label,
                     lambda r: r["started"])  # fmt: skip

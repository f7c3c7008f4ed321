"""The source disks of a conversion, and the overlay through which each is used.

The source is never written: every edit (fix-ups, trimming free space) goes to a
qcow2 overlay backed by it, and the copy reads the overlay. Free space trimmed in
the overlay reads as zeros, so the transfer engine does not move it.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.inventory.model import Disk, Inventory
from p2v.errors import ComponentError, InputError


@dataclass
class SourceDisk:
    name: str  # the guest's name for the disk: sda, nvme0n1, ...
    spec: str  # what QEMU reads: an image path, a block device, a local NBD URI
    size: int
    format: str  # raw or qcow2: how the overlay reads its backing
    origin: str = ""  # what users know it as (agent://HOST:PORT/sda); default: spec

    def __post_init__(self) -> None:
        self.origin = self.origin or self.spec

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SourceDisk:
        return cls(**data)


def image_info(path: str) -> tuple[str, int]:
    """(format, virtual size) of an image file or block device, by qemu-img."""
    if not Path(path).exists():
        raise InputError(f"{path}: no such file or device")
    done = subprocess.run(
        ["qemu-img", "info", "--output=json", "--force-share", path],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise InputError(f"{path}: qemu-img cannot read it: {done.stderr.strip()}")
    info = json.loads(done.stdout)
    return str(info["format"]), int(info["virtual-size"])


def disks_from_images(
    paths: list[str], inventory: Inventory | None
) -> tuple[Inventory, list[SourceDisk]]:
    """Source disks from image files or block devices. Without an inventory the guest
    is assumed to have named them sda, sdb, ... in the order given."""
    disks = []
    for index, path in enumerate(paths):
        fmt, size = image_info(path)
        if inventory is not None and index < len(inventory.disks):
            name = inventory.disks[index].name
        else:
            name = f"sd{chr(ord('a') + index)}"
        disks.append(SourceDisk(name, str(Path(path).resolve()), size, fmt))
    if inventory is None:
        inventory = Inventory(disks=[Disk(d.name, d.spec, d.size) for d in disks])
    return inventory, disks


def make_overlay(disk: SourceDisk, path: Path) -> Path:
    """A qcow2 overlay backed (read-only) by the source disk."""
    done = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", disk.format, "-b", disk.spec,
         "-o", "lazy_refcounts=on", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise InputError(f"{disk.origin}: cannot open it: {done.stderr.strip()}")
    return path


def mark_zeros(overlay: Path, runs: list[tuple[int, int]]) -> int:
    """Record in `overlay` that its backing disk reads as zeros in the (offset, length)
    `runs` (what the agent found on it), where the overlay holds nothing of its own:
    those ranges are then known zeros, which the copy neither reads nor writes.
    Returns the bytes so marked."""
    if not runs:
        return 0
    done = subprocess.run(
        ["qemu-img", "map", "--output=json", "-f", "qcow2", str(overlay)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise ComponentError(f"{overlay}: qemu-img cannot map it: {done.stderr.strip()}")
    layers = json.loads(done.stdout)
    own = [(e["start"], e["start"] + e["length"]) for e in layers if e["depth"] == 0]
    marks = outside([(offset, offset + length) for offset, length in runs], own)
    commands = "".join(f"write -z -u {lo} {hi - lo}\n" for lo, hi in marks)
    done = subprocess.run(
        ["qemu-io", "-f", "qcow2", str(overlay)], input=commands, capture_output=True, text=True
    )
    if done.returncode != 0 or "failed" in done.stdout + done.stderr:
        raise ComponentError(f"{overlay}: qemu-io cannot mark zeros in it: {done.stderr}")
    return sum(hi - lo for lo, hi in marks)


def outside(ranges: list[tuple[int, int]], taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of sorted (start, end) `ranges` that no range of sorted `taken` covers."""
    result = []
    i = 0
    for lo, hi in ranges:
        while i < len(taken) and taken[i][1] <= lo:
            i += 1
        j, pos = i, lo
        while j < len(taken) and taken[j][0] < hi:
            if taken[j][0] > pos:
                result.append((pos, taken[j][0]))
            pos = max(pos, taken[j][1])
            j += 1
        if pos < hi:
            result.append((pos, hi))
    return result

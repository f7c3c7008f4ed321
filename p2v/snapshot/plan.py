"""What a snapshot will be, decided before anything changes: its name, the overlay
each disk gets, where the memory goes, and the snapshot's XML. Pure: the facts come
in, the plan goes out."""

from __future__ import annotations

import dataclasses
import posixpath
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from p2v.errors import InputError

RECORD_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def checked_name(name: str) -> str:
    """A snapshot's name: it names files beside the disks, so letters, digits, '.', '_'
    and '-', starting with a letter or digit, 64 at most."""
    if not _NAME.fullmatch(name):
        raise InputError(
            f"snapshot name {name!r}: use letters, digits, '.', '_' and '-' (starting with "
            "a letter or digit), 64 at most"
        )
    return name


def default_name(now: float | None = None, prefix: str = "snap") -> str:
    return time.strftime(f"{prefix}-%Y%m%d-%H%M%S", time.localtime(now))


def rotated(snapshots: list[tuple[str, float]], prefix: str, keep: int) -> list[str]:
    """Of (name, taken) pairs, the snapshots a rotation of `prefix` deletes so that
    `keep` of its own stay: the oldest first. Others' snapshots are never counted."""
    own = re.compile(re.escape(prefix) + r"-\d{8}-\d{6}")
    mine = sorted((taken, name) for name, taken in snapshots if own.fullmatch(name))
    return [name for _, name in mine[: max(len(mine) - keep, 0)]]


def overlay_path(disk: str, snapshot: str) -> str:
    """Where a disk's writes go once `snapshot` is taken: beside the disk, in its pool."""
    directory, base = posixpath.split(disk)
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return posixpath.join(directory, f"{stem}.{snapshot}.qcow2")


def memory_path(directory: str, vm: str, snapshot: str) -> str:
    return posixpath.join(directory, f"{vm}.{snapshot}.mem")


def nvram_copy(nvram: str, snapshot: str) -> str:
    """The UEFI variables as they were at `snapshot`, beside the live ones."""
    return f"{nvram}.{snapshot}"


@dataclass(frozen=True)
class Overlay:
    target: str  # vda
    disk: str  # the file the disk is now
    overlay: str  # the file it will write to after the snapshot


@dataclass
class Plan:
    vm: str
    uuid: str
    name: str
    running: bool  # when planned: a running guest's memory is saved with it
    memory_file: str | None  # None: disks only
    disks: list[Overlay] = field(default_factory=list)
    nvram: str | None = None  # the UEFI variable store, copied beside it
    memory_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        if data.get("version") != RECORD_VERSION:
            raise InputError(f"a snapshot job recorded as version {data.get('version')}; "
                             f"this p2v reads version {RECORD_VERSION}")  # fmt: skip
        fields = {k: v for k, v in data.items() if k != "version"}
        fields["disks"] = [Overlay(**d) for d in fields.get("disks", [])]
        return cls(**fields)

    def xml(self, description: str = "") -> str:
        """The snapshot's XML for libvirt: external overlays, memory in a file."""
        root = ET.Element("domainsnapshot")
        ET.SubElement(root, "name").text = self.name
        if description:
            ET.SubElement(root, "description").text = description
        if self.memory_file:
            ET.SubElement(root, "memory", snapshot="external", file=self.memory_file)
        else:
            ET.SubElement(root, "memory", snapshot="no")
        disks = ET.SubElement(root, "disks")
        for disk in self.disks:
            node = ET.SubElement(disks, "disk", name=disk.target, snapshot="external")
            ET.SubElement(node, "source", file=disk.overlay)
            ET.SubElement(node, "driver", type="qcow2")
        return ET.tostring(root, encoding="unicode")

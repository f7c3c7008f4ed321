"""The partition table of a disk, read with pyparted (libparted); never written."""

from __future__ import annotations

from dataclasses import dataclass

from agent.inventory.probe import Probe


@dataclass
class TablePartition:
    number: int
    path: str
    start_bytes: int
    size_bytes: int
    kind: str  # primary, logical, extended, or gpt
    gpt_name: str | None
    flags: list[str]


def read_table(probe: Probe, path: str) -> tuple[str | None, list[TablePartition]] | None:
    """(table type, partitions); (None, []) for a disk without a label; None if unknown."""
    try:
        import parted
    except ImportError:
        probe.note("pyparted is not installed: partition tables unknown")
        return None
    try:
        device = parted.getDevice(path)
        try:
            disk = parted.newDisk(device)
        except parted.DiskLabelException:
            return None, []
    except Exception as e:  # libparted's errors come through several exception types
        if "unrecognised disk label" in str(e):
            return None, []  # a blank disk: libparted says so with a generic error
        probe.note(f"{path}: pyparted could not read the partition table ({e})")
        return None
    kinds = {
        parted.PARTITION_NORMAL: "primary",
        parted.PARTITION_LOGICAL: "logical",
        parted.PARTITION_EXTENDED: "extended",
    }
    found = []
    sector = device.sectorSize
    for part in disk.partitions:
        gpt = disk.type == "gpt"
        found.append(
            TablePartition(
                number=part.number,
                path=part.path,
                start_bytes=part.geometry.start * sector,
                size_bytes=part.geometry.length * sector,
                kind="gpt" if gpt else kinds.get(part.type, str(part.type)),
                gpt_name=(part.name or None) if gpt else None,
                flags=[f for f in part.getFlagsAsString().split(", ") if f],
            )
        )
    return disk.type, found

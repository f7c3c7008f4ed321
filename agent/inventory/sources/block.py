"""Disks and their partitions as sysfs describes them (/sys/block).

Everything here reads plain files, so it works without udev and can be tested on a
recorded tree. Serial numbers come from where each driver puts them: NVMe and virtio
have a `serial` file, SCSI and SATA disks answer VPD page 0x80.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from agent.inventory.model import Disk
from agent.inventory.probe import Probe

# Devices that are not disks of the machine: the live medium's loops, RAM disks,
# device-mapper and md devices (listed through LVM and md-raid), optical drives.
VIRTUAL_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "nbd", "fd", "zd")
SECTOR = 512  # sysfs counts sizes and offsets in 512-byte sectors, whatever the disk's


@dataclass
class SysfsPartition:
    number: int
    name: str
    start_bytes: int
    size_bytes: int


@dataclass
class SysfsDisk:
    disk: Disk
    partitions: list[SysfsPartition] = field(default_factory=list)
    read_only: bool = False


def disk_names(probe: Probe, wanted: list[str] | None = None) -> list[str]:
    """Kernel names of the machine's disks, or of the ones asked for (loops allowed)."""
    names = sorted(p.name for p in probe.path("/sys/block").glob("*"))
    if wanted is not None:
        return [n for n in names if n in wanted]
    # Hidden disks have no device node: the paths under an NVMe multipath namespace.
    return [
        n
        for n in names
        if not n.startswith(VIRTUAL_PREFIXES) and probe.read(f"/sys/block/{n}/hidden") != "1"
    ]


def transport_from_path(device_path: str) -> str | None:
    """Which bus a disk hangs off, from its resolved /sys/devices path."""
    parts = device_path.split("/")
    for marker, name in (
        ("nvme", "nvme"),
        ("usb", "usb"),
        ("ata", "sata"),
        ("virtio", "virtio"),
        ("mmc_host", "mmc"),
        ("xen", "xen"),
    ):
        if any(p.startswith(marker) for p in parts):
            return name
    if any(p.startswith("host") for p in parts) and any(p.startswith("target") for p in parts):
        return "scsi"
    return None


def parse_vpd_serial(page: bytes) -> str | None:
    """The unit serial number from SCSI VPD page 0x80 (4-byte header, then ASCII)."""
    if len(page) < 4 or page[1] != 0x80:
        return None
    length = int.from_bytes(page[2:4], "big")
    serial = page[4 : 4 + length].decode("ascii", errors="replace").strip(" \0")
    return serial or None


def read_disk(probe: Probe, name: str) -> SysfsDisk | None:
    base = f"/sys/block/{name}"
    sectors = probe.read(f"{base}/size")
    if sectors is None or not sectors.isdigit():
        probe.note(f"{name}: no size in sysfs; left out")
        return None
    disk = Disk(name=name, path=f"/dev/{name}", size_bytes=int(sectors) * SECTOR)
    disk.logical_sector = _int(probe.read(f"{base}/queue/logical_block_size")) or 512
    disk.physical_sector = _int(probe.read(f"{base}/queue/physical_block_size")) or 512
    rotational = probe.read(f"{base}/queue/rotational")
    disk.rotational = None if rotational is None else rotational == "1"
    removable = probe.read(f"{base}/removable")
    disk.removable = None if removable is None else removable == "1"
    disk.model = probe.read(f"{base}/device/model") or None
    disk.serial = (
        probe.read(f"{base}/device/serial")
        or probe.read(f"{base}/serial")
        or parse_vpd_serial(probe.read_bytes(f"{base}/device/vpd_pg80") or b"")
        or None
    )
    link = probe.path(base)
    if link.is_symlink():
        disk.transport = transport_from_path(os.readlink(link))
    found = SysfsDisk(disk, read_only=probe.read(f"{base}/ro") == "1")
    for entry in sorted(probe.path(base).glob(f"{name}*")):
        number = _int(probe.read(entry / "partition"))
        start, size = _int(probe.read(entry / "start")), _int(probe.read(entry / "size"))
        if number is None or start is None or size is None:
            continue
        found.partitions.append(SysfsPartition(number, entry.name, start * SECTOR, size * SECTOR))
    found.partitions.sort(key=lambda p: p.number)
    return found


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None

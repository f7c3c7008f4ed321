"""Gather the inventory of the running machine from every source.

Each source is a small function of `sources/`; a source that cannot read something
leaves a value unknown and a note, and the rest goes on.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from agent import __version__
from agent.inventory.model import Disk, Filesystem, Inventory, Partition
from agent.inventory.probe import Probe
from agent.inventory.sources import block, cpu, dmi, firmware, lvm, mdraid, memory, network, pci
from agent.inventory.sources.filesystems import FilesystemProbe
from agent.inventory.sources.partitions import read_table
from agent.inventory.sources.udev import BUS_NAMES, by_id_link, udev_properties
from agent.protocol import LIVE_LABEL

LIVE_MOUNTS = ("/", "/run/live/medium", "/run/p2v/medium", "/cdrom")


def collect(probe: Probe | None = None, disks: list[str] | None = None) -> Inventory:
    """The inventory; `disks` limits it to these kernel names (loop devices allowed)."""
    probe = probe or Probe()
    inventory = Inventory(agent_version=__version__, hostname=socket.gethostname())
    dmi.read_identity(probe, inventory.machine)
    firmware.read_firmware(probe, inventory.machine)
    inventory.cpu = cpu.read_cpu(probe)
    inventory.memory = memory.read_memory(probe)
    filesystems = FilesystemProbe(probe)
    members: dict[str, list[str]] = {"LVM2_member": [], "linux_raid_member": []}
    for name in block.disk_names(probe, disks):
        found = block.read_disk(probe, name)
        if found is None:
            continue
        disk = found.disk
        _add_udev(probe, disk)
        _add_partitions(probe, found, filesystems, members)
        disk.live_medium = is_live_medium(disk)
        inventory.disks.append(disk)
    if disks is not None:
        missing = sorted(set(disks) - {d.name for d in inventory.disks})
        if missing:
            probe.note(f"asked for disks that are not here: {', '.join(missing)}")
    if members["LVM2_member"]:

        def probe_fs(path: str, offset: int, size: int) -> Filesystem | None:
            return filesystems.probe_device(path, offset, size)[0]

        inventory.volume_groups = lvm.read_volume_groups(probe, members["LVM2_member"], probe_fs)
    inventory.raid_arrays = mdraid.read_raid_arrays(
        probe, [os.path.basename(p) for p in members["linux_raid_member"]]
    )
    inventory.nics = network.read_nics(probe)
    inventory.pci_devices = pci.read_pci(probe)
    inventory.notes = probe.notes
    return inventory


def _on_this_machine(probe: Probe) -> bool:
    """Devices are opened only when the probe looks at the running system."""
    return probe.root == Path("/")


def _add_udev(probe: Probe, disk: Disk) -> None:
    disk.by_id = by_id_link(probe, disk.name)
    if not _on_this_machine(probe):
        return
    props = udev_properties(disk.name)
    disk.serial = disk.serial or props.get("ID_SERIAL_SHORT") or None
    disk.model = disk.model or (props.get("ID_MODEL") or "").replace("_", " ") or None
    disk.transport = disk.transport or BUS_NAMES.get(props.get("ID_BUS", ""))


def _add_partitions(
    probe: Probe,
    found: block.SysfsDisk,
    filesystems: FilesystemProbe,
    members: dict[str, list[str]],
) -> None:
    disk = found.disk
    table = read_table(probe, disk.path) if _on_this_machine(probe) else None
    if table is not None:
        disk.partition_table = table[0]
        names = {p.number: p.name for p in found.partitions}
        for t in table[1]:
            disk.partitions.append(
                Partition(
                    number=t.number,
                    name=names.get(t.number, os.path.basename(t.path)),
                    start_bytes=t.start_bytes,
                    size_bytes=t.size_bytes,
                    kind=t.kind,
                    gpt_name=t.gpt_name,
                    flags=t.flags,
                )
            )
    else:
        disk.partitions = [
            Partition(p.number, p.name, p.start_bytes, p.size_bytes, kind="unknown")
            for p in found.partitions
        ]
    if not _on_this_machine(probe):
        return
    for part in disk.partitions:
        if part.kind == "extended":
            continue
        path = f"/dev/{part.name}"
        part.filesystem, values = filesystems.probe_device(path)
        part.type_id = values.get("PART_ENTRY_TYPE")
        if values.get("TYPE") in members:
            members[values["TYPE"]].append(path)
    if not disk.partitions:
        disk.filesystem, values = filesystems.probe_device(disk.path)
        if values.get("TYPE") in members:
            members[values["TYPE"]].append(disk.path)


def is_live_medium(disk: Disk) -> bool:
    """True for the disk the agent runs from: it carries the agent's label or is mounted
    where a live system mounts its medium."""
    filesystems = [disk.filesystem, *(p.filesystem for p in disk.partitions)]
    for fs in filesystems:
        if fs is None:
            continue
        if (fs.label or "").upper().startswith(LIVE_LABEL):
            return True
        if fs.mountpoint in LIVE_MOUNTS:
            return True
    return False

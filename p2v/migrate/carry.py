"""What a move carries besides the disks themselves: a VM's snapshots and its backup
chain's checkpoints.

libvirt keeps a snapshot's or a checkpoint's record on its host; its data is in files
(the overlays an external snapshot started, the memory it saved, our copy of the UEFI
variables) and in the disks (a checkpoint's dirty bitmap lives in the qcow2 file).
So, as `virsh snapshot-create --redefine` and `checkpoint-create --redefine` let one
do: a cold move copies every file the snapshots use to the same path on the
destination (a qcow2 overlay names its backing file by path), bitmaps and all, then
records the snapshots (the current one marked current) and the checkpoints there
before the source lets the VM go. A live move carries checkpoints (libvirt migrates
the bitmaps of the disks it copies, and the records are made there afterwards); it
cannot carry snapshots: libvirt refuses to migrate a VM that has any, and its
storage copy would flatten their layers.
"""

from __future__ import annotations

import posixpath
from typing import Any

from p2v.host import virt
from p2v.host.virt import backups, snapshots, storage
from p2v.host.virt.domainxml import DomainXml
from p2v.snapshot.plan import nvram_copy


def snapshot_files(
    listed: list[snapshots.SnapshotInfo], described: DomainXml
) -> tuple[list[str], list[str]]:
    """(volumes, UEFI variable copies) the snapshots `listed` use beside the VM's disks
    as they are now: the overlays each snapshot started (those of other branches of
    the tree too), the memory each saved; and our copy of the variables each took."""
    files: list[str] = []
    nvram: list[str] = []
    for taken in listed:
        for overlay in taken.disks.values():
            files.append(overlay)
        if taken.memory_file:
            files.append(taken.memory_file)
        if described.firmware == "uefi" and described.nvram:
            nvram.append(nvram_copy(described.nvram, taken.name))
    current = {d.source for d in described.writable_disks()}
    return sorted(set(files) - current), nvram


def layers(src: Any, vol: Any) -> list[str]:
    """The paths a volume reads through to (its backing chain), nearest first."""
    chain: list[str] = []
    below = storage.backing(vol)
    while below is not None and below not in chain:
        chain.append(below)
        under = storage.volume_at(src, below)
        below = storage.backing(under) if under is not None else None
    return chain


def same_place(path: str, dest_path: str) -> str | None:
    """Why a file of a VM with snapshots or layers cannot go where planned, or None:
    the overlays name the files below them by path, so every file keeps its own."""
    if dest_path == path:
        return None
    return (f"{path} would become {dest_path} there, but a VM's snapshot files and "
            f"layers keep their paths: the destination needs a storage pool at "
            f"{posixpath.dirname(path)} (drop --pool)")  # fmt: skip


def redefine_snapshots(src: Any, dst: Any, uuid: str) -> dict[str, Any]:
    """Step `redefine snapshots`: the source's records of the VM's snapshots, made on
    the destination (whose copies of their files are in place), parents first."""
    here, there = virt.find(src, uuid), virt.find(dst, uuid)
    made = []
    for name, xml, current in snapshots.definitions(here):
        snapshots.redefine(there, xml, current)
        made.append(name)
    return {"snapshots": made}


def redefine_checkpoints(dst: Any, uuid: str, definitions: list[str]) -> dict[str, Any]:
    """Step `redefine checkpoints`: the VM's checkpoints recorded on the destination,
    whose disks hold their bitmaps, parents first."""
    there = virt.find(dst, uuid)
    known = {c.name for c in backups.checkpoints(there)}
    made = []
    for xml in definitions:
        name = backups.checkpoint_name_of(xml)
        if name not in known:  # made by an earlier run of the step
            backups.redefine_checkpoint(there, xml)
        made.append(name)
    return {"checkpoints": made}

"""What a snapshot, a revert or a delete will do, found out and checked before anything
changes: every reason to refuse, said at once."""

from __future__ import annotations

import posixpath
from typing import Any

from p2v.errors import InputError
from p2v.host import virt
from p2v.host.virt import domains, snapshots, storage
from p2v.host.virt.domainxml import DomainXml
from p2v.snapshot.plan import Overlay, Plan, memory_path, nvram_copy, overlay_path
from p2v.units import format_size

MEMORY_MARGIN = 1.1  # a saved memory image holds the RAM and the devices' state


def plan_create(conn: Any, domain: Any, uri: str, name: str, disk_only: bool) -> Plan:
    """The plan of a new snapshot `name`, or InputError naming every reason it cannot be."""
    vm = domain.name()
    problems = []
    if not snapshots.external_supported(conn):
        problems.append(f"libvirt {virt.version_string(conn)} at {uri} cannot revert or delete "
                        "external snapshots (9.9 and later can)")  # fmt: skip
    if snapshots.lookup(domain, name) is not None:
        problems.append(f"{vm} has a snapshot named {name!r} already")
    state = virt.state(domain)
    running = state in ("running", "paused")
    if not running and state != "shut off":
        problems.append(f"{vm} is {state}: a snapshot is of a running or a shut-off machine")
    now = DomainXml.parse(domains.live_xml(domain) if running else domains.definition(domain))
    memory = running and not disk_only
    if memory and (held := now.passthrough()):
        problems.append(f"{vm} holds host devices whose state cannot be saved: "
                        f"{', '.join(held)}; take --disk-only")  # fmt: skip
    if now.tpm_state():
        problems.append(f"{vm} has an emulated TPM, whose state a snapshot does not hold")
    disks, disk_problems = _overlays(conn, now, name)
    problems += disk_problems
    memory_file = None
    if memory and disks:
        directory = posixpath.dirname(disks[0].disk)
        memory_file = memory_path(directory, vm, name)
        problems += _room_for_memory(conn, disks[0].disk, memory_file, now.memory_kib << 10)
    nvram = now.nvram if now.firmware == "uefi" else None
    if nvram and _exists(conn, nvram_copy(nvram, name)):
        problems.append(f"{nvram_copy(nvram, name)} exists already on {uri}")
    if problems:
        raise InputError("; ".join(problems))
    return Plan(vm=vm, uuid=domain.UUIDString(), name=name, running=running,
                memory_file=memory_file, disks=disks, nvram=nvram,
                memory_bytes=now.memory_kib << 10 if memory else 0)  # fmt: skip


def _overlays(conn: Any, now: DomainXml, name: str) -> tuple[list[Overlay], list[str]]:
    disks, problems = [], []
    for disk in now.writable_disks():
        if disk.kind != "file":
            problems.append(f"disk {disk.target} is a {disk.kind} disk; snapshots are taken "
                            "of file disks")  # fmt: skip
            continue
        overlay = overlay_path(disk.source, name)
        if _exists(conn, overlay):
            problems.append(f"disk {disk.target}: {overlay} exists already")
        disks.append(Overlay(disk.target, disk.source, overlay))
    if not disks and not problems:
        problems.append(f"{now.name} has no disk to snapshot")
    return disks, problems


def _exists(conn: Any, path: str) -> bool:
    """Whether a file is at `path` on the host, as its storage pools see it."""
    with storage.file_volume(conn, path) as vol:
        return vol is not None


def _room_for_memory(conn: Any, disk: str, memory_file: str, ram: int) -> list[str]:
    vol = storage.volume_at(conn, disk)
    if vol is None:
        return [f"{disk} is in no storage pool: libvirt cannot tell the room beside it"]
    pool = storage.pool_of(vol)
    free, need = storage.free_bytes(pool), int(ram * MEMORY_MARGIN)
    if free < need:
        return [f"too little room for the memory image {memory_file}: it needs up to "
                f"{format_size(need)}, the pool {storage.pool_name(pool)} has "
                f"{format_size(free)} free"]  # fmt: skip
    return []


def snapshot_of(domain: Any, name: str) -> Any:
    found = snapshots.lookup(domain, name)
    if found is None:
        names = [s.name for s in snapshots.listed(domain)]
        have = f"it has {', '.join(names)}" if names else "it has none"
        raise InputError(f"{domain.name()} has no snapshot named {name!r}; {have}")
    return found


def check_revert(domain: Any, name: str, force: bool) -> snapshots.SnapshotInfo:
    """The snapshot to go back to; refused for a running VM unless `force` (what it
    did since the snapshot is lost)."""
    snapshot_of(domain, name)
    info = next(s for s in snapshots.listed(domain) if s.name == name)
    state = virt.state(domain)
    if state in ("running", "paused") and not force:
        raise InputError(f"{domain.name()} is {state}: reverting to {name!r} throws away what it "
                         "did since; add --force to do it anyway")  # fmt: skip
    return info


def check_delete(domain: Any, name: str) -> None:
    """Refuse what libvirt cannot merge away (11.x): the current snapshot while it
    has children, and a snapshot with more than one child."""
    snapshot_of(domain, name)
    listed = snapshots.listed(domain)
    children = [s.name for s in listed if s.parent == name]
    current = next(s for s in listed if s.name == name).current
    if current and children:
        raise InputError(
            f"{name} is {domain.name()}'s current snapshot and has children "
            f"({', '.join(children)}): libvirt cannot merge it away while the machine goes "
            "on from it; revert to another snapshot first, or delete its children"
        )
    if len(children) > 1:
        raise InputError(
            f"{name} has {len(children)} child snapshots ({', '.join(children)}): libvirt "
            "merges a snapshot into one child only; delete all but one of them first"
        )

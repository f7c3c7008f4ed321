"""What a migration will do, found out and checked before anything changes: the VM
and its state, the two hosts, each disk's volume and where it goes, and every reason
to refuse (all said at once where they are independent)."""

from __future__ import annotations

import dataclasses
import posixpath
from dataclasses import dataclass, field
from typing import Any

from p2v.errors import InputError
from p2v.host import virt
from p2v.host.virt import domains, migration, storage
from p2v.host.virt.domainxml import DomainXml
from p2v.units import format_size


@dataclass(frozen=True)
class Request:
    """What the user asked for (all of it recorded in the journal)."""

    vm: str
    source: str
    destination: str
    live: bool = False
    copy_storage: bool | None = None  # None: when the destination lacks the disks
    pool: str | None = None  # the destination's pool for a cold migration's disks
    max_downtime_ms: int = 300
    escalate: bool = True
    postcopy: bool = True
    auto_converge: bool = True
    timeout: float | None = None
    bandwidth_mib: int | None = None
    delete_source: bool = False
    connect_timeout: float = 30.0
    io_timeout: float = 60.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        return cls(**data)


@dataclass
class DiskMove:
    target: str  # vda
    path: str  # on the source
    format: str | None
    source_pool: str
    volume: str
    length: int  # the volume's bytes (its file)
    allocation: int  # bytes its host has allocated for it
    dest_pool: str
    dest_path: str  # where the destination will hold it
    copy: bool  # False: the two hosts share this storage


@dataclass
class Plan:
    vm: str
    uuid: str
    source_host: str  # hostname, for the record
    destination_host: str
    running: bool
    autostart: bool
    memory: int  # bytes
    xml: str  # the persistent definition, as the destination will keep it
    disks: list[DiskMove] = field(default_factory=list)

    @property
    def copied(self) -> list[DiskMove]:
        return [d for d in self.disks if d.copy]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        disks = [DiskMove(**d) for d in data.get("disks", [])]
        return cls(**{**data, "disks": disks})


def make_plan(src: Any, dst: Any, request: Request) -> Plan:
    """The plan, or InputError saying every reason it cannot be done."""
    domain = virt.find(src, request.vm)
    here, there = virt.identity(src), virt.identity(dst)
    if here.uuid == there.uuid:
        raise InputError(
            f"{request.source} and {request.destination} are the same host ({here.hostname}, "
            f"host UUID {here.uuid}): a migration goes to another host"
        )
    running = virt.state(domain) in ("running", "paused")
    _check_mode(request, running)
    xml = domains.definition(domain)
    described = DomainXml.parse(xml)
    uuid = described.uuid or ""
    problems = _conflicts(dst, request.vm, uuid, request.destination)
    if held := described.passthrough():
        problems.append(
            f"{request.vm} holds host devices that cannot move with it: {', '.join(held)}; "
            "detach them first"
        )
    if why := migration.cpu_incompatibility(dst, domains.live_xml(domain) if running else xml):
        problems.append(f"{request.destination} cannot run {request.vm}'s CPU: {why}")
    disks, disk_problems = _disks(src, dst, described, request)
    problems += disk_problems
    if not disk_problems:
        problems += _room(dst, disks, request.destination)
    if problems:
        raise InputError("; ".join(problems))
    return Plan(
        vm=described.name, uuid=uuid, source_host=here.hostname,
        destination_host=there.hostname, running=running, autostart=domains.autostart(domain),
        memory=described.memory_kib * 1024, xml=xml, disks=disks,
    )  # fmt: skip


def _check_mode(request: Request, running: bool) -> None:
    if running and not request.live:
        raise InputError(
            f"{request.vm} is running: add --live to move it while it runs, or shut it "
            "down for a cold migration"
        )
    if not running and request.live:
        raise InputError(f"{request.vm} is shut off: a cold migration moves it (drop --live)")


def _conflicts(dst: Any, name: str, uuid: str, uri: str) -> list[str]:
    problems = []
    if virt.lookup(dst, name) is not None:
        problems.append(f"{uri} has a virtual machine named {name!r} already")
    other = domains.lookup_uuid(dst, uuid)
    if other is not None and other.name() != name:
        problems.append(f"{uri} has a virtual machine with {name}'s UUID {uuid}: {other.name()}")
    return problems


def _disks(
    src: Any, dst: Any, described: DomainXml, request: Request
) -> tuple[list[DiskMove], list[str]]:
    moves, problems = [], []
    for disk in described.writable_disks():
        if disk.kind not in ("file", "block"):
            problems.append(f"disk {disk.target} is a {disk.kind} disk; only files and block "
                            "devices of storage pools move")  # fmt: skip
            continue
        vol = storage.volume_at(src, disk.source)
        if vol is None:
            problems.append(
                f"disk {disk.target} ({disk.source}) is in no storage pool of "
                f"{request.source}: libvirt cannot reach it there"
            )
            continue
        source_pool = storage.pool_of(vol)
        directory = posixpath.dirname(disk.source)
        move, problem = _destination(dst, disk.source, directory, source_pool, request)
        if problem:
            problems.append(f"disk {disk.target}: {problem}")
            continue
        assert move is not None
        dest_pool, dest_path, copy = move
        moves.append(DiskMove(
            target=disk.target, path=disk.source, format=disk.format,
            source_pool=source_pool.name(), volume=vol.name(), length=storage.length(vol),
            allocation=int(vol.info()[2]), dest_pool=dest_pool, dest_path=dest_path, copy=copy,
        ))  # fmt: skip
    return moves, problems


def _destination(
    dst: Any, path: str, directory: str, source_pool: Any, request: Request
) -> tuple[tuple[str, str, bool] | None, str | None]:
    """(pool, path, copy?) on the destination, or why there is none."""
    there = storage.volume_at(dst, path)
    if there is not None:
        # The same path there: the same storage (NFS, ...) or another file by that name.
        shared = storage.same_storage(source_pool, storage.pool_of(there))
        if shared and request.copy_storage:
            return None, f"{path} is on storage both hosts share: nothing to copy"
        if not shared:
            return None, (
                f"{request.destination} holds another {path} already (not shared with "
                f"{request.source}); remove it there first"
            )
        return (storage.pool_of(there).name(), path, False), None
    if request.copy_storage is False:
        return None, f"{request.destination} has no {path} and --no-copy-storage was given"
    if request.live:
        # libvirt makes the disk there at the same path, in the pool that holds it.
        pool = storage.pool_at(dst, directory)
        if pool is None or (request.pool and pool.name() != request.pool):
            return None, (
                f"{request.destination} has no storage pool at {directory}, where a live "
                "migration puts the disk"
            )
        return (pool.name(), path, True), None
    pool = storage.pool_at(dst, directory) if request.pool is None else None
    if pool is None:
        pool = storage.pool(dst, request.pool or "default")
    target = storage.pool_target(pool)
    return (pool.name(), posixpath.join(target, posixpath.basename(path)), True), None


def _room(dst: Any, disks: list[DiskMove], uri: str) -> list[str]:
    need: dict[str, int] = {}
    for disk in disks:
        if disk.copy:
            need[disk.dest_pool] = need.get(disk.dest_pool, 0) + disk.allocation
    problems = []
    for name, wanted in need.items():
        free = storage.free_bytes(storage.pool(dst, name))
        if wanted > free:
            problems.append(
                f"too little space in the pool {name} of {uri}: the disks need "
                f"{format_size(wanted)}, {format_size(free)} is free"
            )
    return problems

"""What a migration will do, found out and checked before anything changes: the VM
and its state, the two hosts, each disk's volume and where it goes, and every reason
to refuse (all said at once where they are independent)."""

from __future__ import annotations

import dataclasses
import posixpath
from dataclasses import dataclass, field
from typing import Any

from p2v.errors import ComponentError, InputError
from p2v.host import virt
from p2v.host.virt import backups, domains, migration, snapshots, storage
from p2v.host.virt.domainxml import DomainXml
from p2v.migrate import carry
from p2v.units import format_size

RECORD_VERSION = 1  # of the request and plan a migration job records


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
    tls: bool = False  # live: the migration stream (memory, disks) over TLS
    connect_timeout: float = 30.0
    io_timeout: float = 60.0

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        return cls(**_current(data))


@dataclass
class DiskMove:
    target: str  # vda
    path: str  # on the source
    format: str | None
    source_pool: str
    volume: str
    allocation: int  # bytes its host has allocated for it
    dest_pool: str
    dest_path: str  # where the destination will hold it
    copy: bool  # False: the two hosts share this storage
    # The copy an earlier move of this VM left at dest_path, unchanged since, which this
    # one replaces: {"job", "path", "identity", "copy_job"} (copy_job: whose block
    # digests it holds, so that only what changed is sent). None: no such copy there.
    replaces: dict[str, Any] | None = None


@dataclass
class Plan:
    vm: str
    uuid: str
    source_host: str  # hostname, for the record
    destination_host: str
    running: bool
    autostart: bool
    memory: int  # bytes
    disks: list[DiskMove] = field(default_factory=list)  # with the files snapshots use
    snapshots: list[str] = field(default_factory=list)  # their names, parents first
    checkpoints: list[str] = field(default_factory=list)  # their XML (no domain in it)
    nvram_files: list[str] = field(default_factory=list)  # snapshots' UEFI variables
    # The definition (and the snapshots') is read from the source when it is used, never
    # kept in the journal: it holds secrets (VNC passwords, ...).

    @property
    def copied(self) -> list[DiskMove]:
        return [d for d in self.disks if d.copy]

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        fields = _current(data)
        return cls(**{**fields, "disks": [DiskMove(**d) for d in fields.get("disks", [])]})


def _current(data: dict[str, Any]) -> dict[str, Any]:
    """A request or plan as the journal holds it, without its version; InputError for
    one recorded by another version of this program."""
    if data.get("version") != RECORD_VERSION:
        raise InputError(f"a migration recorded as version {data.get('version')}; this p2v "
                         f"reads version {RECORD_VERSION}: start the migration again")  # fmt: skip
    return {k: v for k, v in data.items() if k != "version"}


def make_plan(
    src: Any, dst: Any, request: Request, leftovers: dict[str, dict[str, Any]] | None = None
) -> Plan:
    """The plan, or InputError saying every reason it cannot be done. `leftovers`: the
    copies earlier moves of this VM left on the destination, by path (what each move's
    step `release source` recorded), which this move may replace."""
    domain = virt.find(src, request.vm)
    here, there = virt.identity(src), virt.identity(dst)
    if here.uuid == there.uuid:
        raise InputError(
            f"{request.source} and {request.destination} are the same host ({here.hostname}, "
            f"host UUID {here.uuid}): a migration goes to another host"
        )
    now = virt.state(domain)
    running = now != "shut off"
    _check_mode(request, now)
    xml = domains.definition(domain)
    described = DomainXml.parse(xml)
    current = DomainXml.parse(domains.live_xml(domain)) if running else described
    name, uuid = described.name, described.uuid or ""
    problems = _conflicts(dst, name, uuid, request.destination)
    if held := current.passthrough():
        problems.append(
            f"{name} holds host devices that cannot move with it: {', '.join(held)}; "
            "detach them first"
        )
    listed = snapshots.listed(domain)
    taken = [s.name for s in listed]
    if running and taken:
        problems.append(
            f"{name} has {len(taken)} snapshot(s): libvirt cannot migrate a running VM with "
            "snapshots (its storage copy would flatten their layers); shut it down and move "
            "it cold, which carries them"
        )
    if not running:
        problems += _left_behind(domain, described, request)
    files, nvram_files = ([], []) if running else carry.snapshot_files(listed, described)
    try:
        why = migration.cpu_incompatibility(dst, domains.live_xml(domain) if running else xml)
    except ComponentError as error:
        why = str(error)
    if why:
        problems.append(f"{request.destination} cannot run {name}'s CPU: {why}")
    if described.firmware == "uefi" and described.loader and \
            not storage.file_exists(dst, described.loader):  # fmt: skip
        problems.append(f"{request.destination} has no UEFI firmware {described.loader}, which "
                        f"{name} starts from: install it there first (Debian: ovmf)")  # fmt: skip
    media = [d for d in current.disks if d.device != "disk" and d.source]
    if media:
        inserted = ", ".join(f"{d.target} ({d.source})" for d in media)
        problems.append(f"{name} has media inserted that stays on {request.source}: {inserted}; "
                        "eject it first")  # fmt: skip
    # What other hosts or people changed in the pools' directories since libvirt looked.
    storage.refresh_all(src)
    storage.refresh_all(dst)
    disks, disk_problems = _disks(src, dst, described, request, leftovers or {}, files)
    problems += disk_problems
    if not disk_problems:
        copies = 2 if request.delete_source and not request.live else 1
        problems += _room(dst, disks, request.destination, copies)
    if problems:
        raise InputError("; ".join(problems))
    return Plan(
        vm=name, uuid=uuid, source_host=here.hostname, destination_host=there.hostname,
        running=running, autostart=domains.autostart(domain),
        memory=described.memory_kib * 1024, disks=disks, snapshots=taken,
        checkpoints=backups.checkpoint_definitions(domain), nvram_files=nvram_files,
    )  # fmt: skip


def _check_mode(request: Request, now: str) -> None:
    if now == "shut off":
        if request.live:
            raise InputError(f"{request.vm} is shut off: a cold migration moves it (drop --live)")
        return
    if now != "running":
        raise InputError(f"{request.vm} is {now}: a live migration moves a running guest; "
                         "resume it, or shut it down for a cold migration")  # fmt: skip
    if not request.live:
        raise InputError(
            f"{request.vm} is running: add --live to move it while it runs, or shut it "
            "down for a cold migration"
        )


def _left_behind(domain: Any, described: DomainXml, request: Request) -> list[str]:
    """What a cold move cannot take along, which undefining it at the source would lose."""
    problems = []
    if domains.has_saved_memory(domain):
        problems.append(
            f"{described.name} has a saved memory image (virsh managedsave) on "
            f"{request.source}, which a cold migration cannot take along: start it and "
            "migrate it live, or remove the image"
        )
    if described.tpm_state():
        problems.append(f"{described.name} has an emulated TPM whose state stays on "
                        f"{request.source}: a cold migration cannot take it along")  # fmt: skip
    return problems


def _conflicts(dst: Any, name: str, uuid: str, uri: str) -> list[str]:
    problems = []
    if virt.lookup(dst, name) is not None:
        problems.append(f"{uri} has a virtual machine named {name!r} already")
    other = domains.lookup_uuid(dst, uuid)
    if other is not None and other.name() != name:
        problems.append(f"{uri} has a virtual machine with {name}'s UUID {uuid}: {other.name()}")
    return problems


def _disks(
    src: Any, dst: Any, described: DomainXml, request: Request, leftovers: dict[str, Any],
    files: list[str],
) -> tuple[list[DiskMove], list[str]]:  # fmt: skip
    """Each disk's move, then (cold) each file its snapshots use and each layer it reads
    through to, all at their own paths there; and every reason they cannot move."""
    moves, problems = [], []
    carried = list(files)
    for disk in described.writable_disks():
        if disk.kind != "file":
            problems.append(f"disk {disk.target} is a {disk.kind} disk; only file disks of "
                            "storage pools move")  # fmt: skip
            continue
        label = f"disk {disk.target}"
        vol, problem = _in_pool(src, disk.source, label, request)
        if problem:
            problems.append(problem)
            continue
        if base := storage.backing(vol):
            if request.live:
                problems.append(f"disk {disk.target} ({disk.source}) reads through to {base}, "
                                "which a live move would flatten: flatten it first, or move "
                                "it cold, which carries its layers")  # fmt: skip
                continue
            carried += carry.layers(src, vol)
        move, problem = _move(dst, vol, disk.target, disk.source, disk.format, request,
                              leftovers, label)  # fmt: skip
        if problem:
            problems.append(problem)
        elif move is not None:
            moves.append(move)
    ours = {d.source for d in described.writable_disks()}
    for path in sorted(set(carried) - ours):
        label = "a file of its snapshots or layers"
        vol, problem = _in_pool(src, path, label, request)
        if not problem:
            move, problem = _move(dst, vol, posixpath.basename(path), path, None, request,
                                  leftovers, label)  # fmt: skip
        if problem:
            problems.append(problem)
        elif move is not None:
            moves.append(move)
    if carried:  # the overlays name what is below them by path
        problems += [p for m in moves if m.copy and (p := carry.same_place(m.path, m.dest_path))]
    targets = [d.dest_path for d in moves]
    if twice := sorted({t for t in targets if targets.count(t) > 1}):
        problems.append(f"two disks would become {', '.join(twice)} on {request.destination}")
    return moves, problems


def _in_pool(src: Any, path: str, label: str, request: Request) -> tuple[Any, str | None]:
    """The source's volume at `path`, or why there is none (`label` names the file)."""
    vol = storage.volume_at(src, path)
    if vol is None:
        return None, (f"{label} ({path}) is in no storage pool of {request.source}: libvirt "
                      "cannot reach it there")  # fmt: skip
    return vol, None


def _move(
    dst: Any, vol: Any, target: str, path: str, fmt: str | None, request: Request,
    leftovers: dict[str, Any], label: str,
) -> tuple[DiskMove | None, str | None]:  # fmt: skip
    """The move of the source's volume `vol` at `path` (a disk, or a file its
    snapshots use), or why not; `label` names it in that."""
    source_pool = storage.pool_of(vol)
    move, problem = _destination(dst, path, posixpath.dirname(path), source_pool, request,
                                 leftovers)  # fmt: skip
    if problem:
        return None, f"{label}: {problem}"
    assert move is not None
    dest_pool, dest_path, copy, replaces = move
    return DiskMove(
        target=target, path=path, format=fmt, source_pool=storage.pool_name(source_pool),
        volume=vol.name(), allocation=storage.allocation(vol), dest_pool=dest_pool,
        dest_path=dest_path, copy=copy, replaces=replaces,
    ), None  # fmt: skip


Destination = tuple[str, str, bool, "dict[str, Any] | None"]


def _destination(
    dst: Any, path: str, directory: str, source_pool: Any, request: Request,
    leftovers: dict[str, Any],
) -> tuple[Destination | None, str | None]:  # fmt: skip
    """(pool, path, copy?, the earlier copy it replaces) on the destination, or why
    there is none."""
    there = storage.volume_at(dst, path)
    if there is not None:
        # The same path there: the same storage (NFS, ...) or another file by that name.
        shared = storage.same_storage(source_pool, storage.pool_of(there))
        if shared and request.copy_storage:
            return None, f"{path} is on storage both hosts share: nothing to copy"
        if not shared:
            return _replaced(there, path, request, leftovers.get(path))
        return (storage.pool_name(storage.pool_of(there)), path, False, None), None
    if request.copy_storage is False:
        return None, f"{request.destination} has no {path} and --no-copy-storage was given"
    if request.live:
        # libvirt makes the disk there at the same path, in the pool that holds it.
        pool = storage.pool_at(dst, directory)
        if pool is None:
            return None, (
                f"{request.destination} has no storage pool at {directory}, where a live "
                "migration puts the disk"
            )
        return (storage.pool_name(pool), path, True, None), None
    pool = storage.pool_at(dst, directory) if request.pool is None else None
    if pool is None:
        pool = storage.pool(dst, request.pool or "default")
    target = posixpath.join(storage.pool_target(pool), posixpath.basename(path))
    if storage.volume_at(dst, target) is not None:
        return None, f"{request.destination} holds a volume at {target} already"
    return (storage.pool_name(pool), target, True, None), None


def _replaced(
    there: Any, path: str, request: Request, left: dict[str, Any] | None
) -> tuple[Destination | None, str | None]:
    """A file at the disk's path on the destination, not shared with the source: the
    copy an earlier move of this VM left there, as it left it, is replaced (a VM
    moved there and back); anything else stays, and the move is refused."""
    if request.copy_storage is False:
        return None, f"{request.destination} holds another {path} and --no-copy-storage was given"
    if left is None:
        return None, (
            f"{request.destination} holds another {path} already (not shared with "
            f"{request.source}, and no earlier move of this VM left it); remove it there first"
        )
    if (now := storage.identity(there)) != left["identity"]:
        changed = ", ".join(k for k, v in now.items() if left["identity"].get(k) != v)
        return None, (
            f"{request.destination} holds the copy of {path} that job {left['job']} left "
            f"there, but it changed since ({changed}): someone uses it; remove it there first"
        )
    return (storage.pool_name(storage.pool_of(there)), path, True, left), None


def _room(dst: Any, disks: list[DiskMove], uri: str, copies: int) -> list[str]:
    """Whether the destination's pools hold the disks, `copies` times over (with
    --delete-source, a staged copy lives beside its durable clone for a while)."""
    need: dict[str, int] = {}
    for disk in disks:
        if disk.copy:
            need[disk.dest_pool] = need.get(disk.dest_pool, 0) + disk.allocation * copies
    problems = []
    for name, wanted in need.items():
        free = storage.free_bytes(storage.pool(dst, name))
        if wanted > free:
            problems.append(
                f"too little space in the pool {name} of {uri}: the disks need "
                f"{format_size(wanted)}, {format_size(free)} is free"
            )
    return problems

"""`p2v backup VM --to DIR` as a job on the step runner, the VM and the directory
locked meanwhile.

Steps: `check` (which backup: full, incremental or differential, and why),
`begin` (libvirt's pull-mode backup with a new checkpoint, the guest frozen for that
instant when its agent answers; a shut-off VM is started paused for it), `copy
TARGET` per disk (the transfer engine reads the NBD export, only the dirty pieces for
an increment, into the backup's qcow2, whose backing file is the backup it builds
on), `end` (the libvirt job ended), `record` (the backup complete in the catalog),
`retain` (with --keep-*: old backups merged away, their checkpoints deleted) and
`stop` (a VM that was off is stopped again).

A backup that stops half-way is never built on: a resume goes on with it while
libvirt's job still runs; otherwise its files and its checkpoint are removed (the
checkpoint's bitmap merges into the one before, so the next increment still sees
every change) and it is taken again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2v.backup import catalog as cat
from p2v.backup import retention
from p2v.backup.catalog import Backup, Catalog
from p2v.backup.plan import Choice, Retention, backup_name, checkpoint_name, choose, to_drop
from p2v.errors import ComponentError, InputError
from p2v.host import virt
from p2v.host.virt import backups, domains
from p2v.host.virt.domainxml import DomainXml
from p2v.jobs.journal import Journal, Lock, vm_lock
from p2v.jobs.runner import Kind, Run, Step
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT, blockhash
from p2v.transfer.endpoints import export as export_nbd
from p2v.transfer.endpoints import open_target
from p2v.transfer.endpoints.export import DEFAULT_NBD_PORT
from p2v.transfer.engine import Settings, Transfer
from p2v.transfer.progress import Reporter
from p2v.transfer.worker import Completion

Say = Callable[[str], None]


@dataclass(frozen=True)
class Request:
    vm: str
    uri: str
    directory: str
    mode: str = "auto"  # auto, full, incremental, differential
    tls_certs: str | None = None  # CA + client certificate for a remote host's export
    nbd_port: int = DEFAULT_NBD_PORT
    keep: dict[str, int] = field(default_factory=dict)  # a Retention's fields
    bwlimit: int | None = None  # bytes/s read from the VM's host
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _describe(params: dict[str, Any], result: dict[str, Any]) -> str:
    r = params.get("request", {})
    kind = result.get("kind") or r.get("mode")
    return f"{kind} backup of {r.get('vm')} on {r.get('uri')} to {r.get('directory')}"


def _outcome(result: dict[str, Any]) -> str | None:
    return summary(result) if result.get("name") else None


KIND = Kind("backup", _describe, _outcome)


def run(
    request: Request, journal: Journal, say: Say, reporter: Reporter
) -> tuple[str, dict[str, Any]]:
    """Check, record and take the backup `request` asks for: (job id, its record)."""
    directory = Path(request.directory).resolve()
    with virt.connection(request.uri, request.connect_timeout) as conn:
        domain = virt.find(conn, request.vm)
        locks = _locks(conn, request, domain.UUIDString(), directory)
        for lock in locks:
            journal.refuse_held(lock)
        export_nbd.check_reach(request.uri, request.tls_certs, "a backup")
        disks = _disks(domain)
        with Catalog(directory, create=True) as catalog:
            choice = choose(request.mode, catalog.backups(), domain.UUIDString(), disks,
                            {c.name for c in backups.checkpoints(domain)})  # fmt: skip
        del domain
    job = Run.start(KIND, {"request": request.to_json()}, journal, say)
    say(f"job {job.job_id} (`p2v show {job.job_id}` shows its steps)")

    def drive() -> dict[str, Any]:
        def check() -> dict[str, Any]:
            for lock in locks:
                job.lock(lock)
            if choice.why:
                say(f"a full backup: {choice.why}")
            return {"choice": choice.__dict__, "disks": disks}

        job(Step("check", check))
        return _steps(job, request, directory, reporter)

    return job.job_id, job.execute(drive)


def resume(
    job_id: str, journal: Journal, say: Say, reporter: Reporter, bwlimit: int | None = None
) -> tuple[str, dict[str, Any]]:
    """Go on with a backup job that stopped (`bwlimit`: a new limit for the rest)."""
    job = Run.resume(KIND, job_id, journal, say)
    request = Request(**job.params["request"])
    if bwlimit:
        request = dataclasses.replace(request, bwlimit=bwlimit)
    directory = Path(request.directory).resolve()

    def drive() -> dict[str, Any]:
        if job.previous.get("check", {}).get("state") != "done":
            raise InputError(f"job {job_id} stopped before its checks: start it again")
        with virt.connection(request.uri, request.connect_timeout) as conn:
            domain = virt.find(conn, request.vm)
            for lock in _locks(conn, request, domain.UUIDString(), directory):
                job.lock(lock)
            del domain
        return _steps(job, request, directory, reporter)

    return job_id, job.execute(drive)


def _locks(conn: Any, request: Request, uuid: str, directory: Path) -> list[Lock]:
    return [
        vm_lock(virt.identity(conn).uuid, uuid, f"{request.vm} on {request.uri}"),
        cat.directory_lock(directory),
    ]


def _disks(domain: Any) -> dict[str, int]:
    """The disks a backup holds, target -> size; InputError for any it cannot."""
    running = virt.state(domain) in ("running", "paused")
    now = DomainXml.parse(domains.live_xml(domain) if running else domains.definition(domain))
    problems, disks = [], {}
    for disk in now.writable_disks():
        if disk.format != "qcow2":
            problems.append(f"disk {disk.target} is {disk.format or 'of no known format'}: "
                            "backups keep track of changes in qcow2 disks only "
                            "(`qemu-img convert -O qcow2`)")  # fmt: skip
            continue
        with virt.failing_as(f", reading the size of disk {disk.target}"):
            disks[disk.target] = int(domain.blockInfo(disk.target, 0)[0])
    if problems:
        raise InputError(f"{domain.name()}: " + "; ".join(problems))
    if not disks:
        raise InputError(f"{domain.name()} has no writable disk to back up")
    return disks


def _steps(job: Run, request: Request, directory: Path, reporter: Reporter) -> dict[str, Any]:
    job.record = {"vm": request.vm, "uri": request.uri, "directory": str(directory)}
    with (
        virt.connection(request.uri, request.connect_timeout) as conn,
        Catalog(directory, create=True) as catalog,
    ):
        domain = virt.find(conn, request.vm)
        # Whether an earlier run started the VM paused for this backup: it stops it.
        started_before = bool(job.earlier("begin").get("started_paused"))

        def begin() -> dict[str, Any]:
            started = _start_paused_if_off(domain, job.say)  # checkpoints change only then
            job.remember(started_paused=started or started_before)
            try:
                return _begin(job, request, catalog, conn, domain) | {
                    "started_paused": started or started_before
                }
            except BaseException:
                with contextlib.suppress(Exception):
                    backups.end(domain)
                if started:
                    with contextlib.suppress(Exception):
                        virt.destroy(domain)
                raise

        def begun_still(_: dict[str, Any]) -> bool:
            # Read to the end already, or libvirt's job still serving the export.
            return job.previous.get("end", {}).get("state") == "done" or backups.running(domain)

        begun = job(Step("begin", begin, settles=True, still=begun_still))
        choice = Choice(**begun["choice"])
        export = backups.Export(**begun["export"])
        backup = catalog.get(begun["backup"])
        job.record.update(kind=choice.kind, why_full=choice.why, name=backup.name,
                          folder=backup.folder(), checkpoint=backup.checkpoint)  # fmt: skip
        chain = catalog.chain(backup)
        totals: dict[str, dict[str, Any]] = {}
        with backups.ended_on_error(domain, stop=bool(begun.get("started_paused"))):
            for disk in backup.disks:

                def copy(disk: cat.Disk = disk) -> dict[str, Any]:
                    return _copy_disk(catalog, chain, disk, directory, export, request,
                                      incremental=choice.since is not None,
                                      reporter=reporter, job_id=job.job_id)  # fmt: skip

                totals[disk.target] = job(Step(f"copy {disk.target}", copy, needs=("begin",)))

            def end() -> dict[str, Any]:
                backups.end(domain)
                export_nbd.drop(export)
                return {}

            job(Step("end", end, needs=("begin",)))

            def record() -> dict[str, Any]:
                catalog.finish(backup.id, begun["consistency"])
                return {}

            job(Step("record", record, needs=("begin",)))
            keep = Retention(**request.keep)
            if keep:

                def retain() -> dict[str, Any]:
                    # Their checkpoints noted first: a retain that stops half-way still
                    # deletes them when it runs again. Their bitmaps merge into the ones
                    # before.
                    dropping = [b.checkpoint for b in to_drop(catalog.backups(), keep)]
                    checkpoints = job.earlier("retain").get("checkpoints", []) + dropping
                    job.remember(checkpoints=checkpoints)
                    dropped = retention.apply(catalog, keep, job.say)
                    for checkpoint in checkpoints:
                        backups.delete_checkpoint(domain, checkpoint)
                    return {"dropped": [b.folder() for b in dropped], "checkpoints": checkpoints}

                job.record["dropped"] = job(Step("retain", retain))["dropped"]
            if begun.get("started_paused"):

                def stop() -> dict[str, Any]:
                    if virt.state(domain) != "paused":  # resumed by someone meanwhile
                        job.say(f"{request.vm} was resumed meanwhile: left running")
                        return {"left": virt.state(domain)}
                    virt.destroy(domain)
                    return {}

                job(Step("stop", stop))
    job.record.update(
        consistency=begun["consistency"],
        unfrozen=begun.get("unfrozen"),
        disks={t: {k: v for k, v in d.items() if k != "child"} for t, d in totals.items()},
    )
    return job.record


def _begin(job: Run, request: Request, catalog: Catalog, conn: Any, domain: Any) -> dict[str, Any]:
    """What to back up, decided again now (the VM may have changed since the check),
    the backup recorded as partial, and libvirt's backup job begun."""
    _clear_partial(catalog, domain, say=job.say)
    sizes = _disks(domain)
    known = {c.name for c in backups.checkpoints(domain)}
    broken = {n: why for n in known if (why := backups.broken(domain, n)) is not None}
    choice = choose(request.mode, catalog.backups(), domain.UUIDString(), sizes, known, broken)
    name = _unique_name(catalog)
    checkpoint = checkpoint_name(name, domain.UUIDString())
    backup = catalog.begin(
        name=name, kind=choice.kind, parent=choice.parent, vm=request.vm,
        vm_uuid=domain.UUIDString(), uri=request.uri, checkpoint=checkpoint,
        why=choice.why, domain_xml=domains.definition(domain), job=job.job_id,
        disks=sizes.items(),
    )  # fmt: skip
    export = export_nbd.listen_at(request.uri, conn, request.nbd_port)
    job.remember(backup=backup.id, export=export.__dict__)
    xml = backups.backup_xml(export, list(sizes), choice.since)
    state = virt.state(domain)  # paused: started so for the backup, or by its user
    begun = backups.begin(domain, xml, backups.checkpoint_xml(checkpoint, list(sizes)),
                          quiesce=state == "running")  # fmt: skip
    consistency = "frozen" if begun.frozen else "crash-consistent"
    why = begun.why_not_frozen
    if state != "running":
        why = f"the VM is {state}: no guest agent runs to freeze its filesystems"
    unfrozen = f" (no freeze: {why})" if why else ""
    job.say(f"backup {backup.folder()} ({choice.kind}) begun, {consistency}{unfrozen}")
    return {"backup": backup.id, "checkpoint": checkpoint, "consistency": consistency,
            "unfrozen": why, "choice": choice.__dict__,
            "export": export.__dict__}  # fmt: skip


def _unique_name(catalog: Catalog) -> str:
    taken = {b.name for b in catalog.backups(state=None)}
    name, n = backup_name(), 1
    while name in taken:
        n += 1
        name = f"{backup_name()}-{n}"
    return name


def _start_paused_if_off(domain: Any, say: Say) -> bool:
    """A backup is read from a running QEMU: a shut-off VM is started paused (its CPUs
    never run) for the time of it."""
    if virt.state(domain) != "shut off":
        return False
    say(f"{domain.name()} is shut off: started paused for the backup, stopped after")
    virt.start(domain, paused=True)
    return True


def _clear_partial(catalog: Catalog, domain: Any, say: Say) -> None:
    """Backups that stopped half-way: their files and checkpoints removed, so that
    nothing builds on them and the next increment starts from the last good one."""
    for backup in catalog.backups(state="partial"):
        backups.end(domain)  # a job of it may still run
        backups.delete_checkpoint(domain, backup.checkpoint)
        shutil.rmtree(catalog.directory / backup.folder(), ignore_errors=True)
        catalog.drop(backup.id)
        say(f"removed the unfinished backup {backup.folder()}")


def _copy_disk(
    catalog: Catalog,
    chain: list[Backup],
    disk: cat.Disk,
    directory: Path,
    export: backups.Export,
    request: Request,
    incremental: bool,
    reporter: Reporter,
    job_id: str,
) -> dict[str, Any]:
    backup, parent = chain[0], (chain[1] if len(chain) > 1 else None)
    path = directory / disk.file
    done: dict[int, bytes | None] = dict(catalog.block_digests(backup.id, disk.target))
    if not path.exists() or not done:
        if done:  # its blocks went with the image: copied again
            catalog.forget_blocks(backup.id, disk.target)
            done = {}
        base = directory / _parent_file(parent, disk.target) if parent else None
        _make_image(path, disk.size, base)
    bitmap = backups.bitmap_of(disk.target) if incremental else None
    source = export_nbd.reader(
        export, disk.target, request.vm, request.tls_certs, request.connect_timeout, bitmap
    )
    try:
        target = open_target(str(path), disk.size, output_format="qcow2", existing=True)
    except BaseException:
        source.close()
        raise
    earlier = chain[1:]

    def record(batch: list[Completion]) -> None:
        rows = []
        for c in batch:
            if c.digest is None and c.pieces is None:
                continue  # clean: as the backup it builds on holds it
            rows.append(_block_row(catalog, earlier, disk, c))
        catalog.add_blocks(backup.id, disk.target, (r for r in rows if r is not None))

    with source, target:
        reporter.start(job_id, f"{disk.target} -> {path}", disk.size)
        outcome = Transfer(
            source, target, settings=Settings(pieces=True, bwlimit=request.bwlimit),
            target_zero=not incremental,
            done=done, on_durable=record, reporter=reporter,
        ).run()  # fmt: skip
    digest = catalog.disk_digest(chain, disk.target, disk.size)
    read = outcome.snapshot.read
    catalog.disk_done(backup.id, disk.target, digest, read)
    return {"digest": digest, "read": read, "stored": cat.stored_bytes(path)}


def _block_row(
    catalog: Catalog, earlier: list[Backup], disk: cat.Disk, c: Completion
) -> tuple[int, bytes, bytes | None] | None:
    """What the catalog keeps of a block this backup wrote: its digest at this
    instant, and its pieces' (the pieces left alone taken from the backups before)."""
    length = blockhash.block_length(c.index, disk.size)
    lengths = blockhash.piece_lengths(length)
    pieces = list(c.pieces) if c.pieces else None
    if pieces is None:  # all zeros, known without reading
        return (c.index, c.digest or blockhash.zero_block(length), None)
    if any(p is None for p in pieces):
        before = catalog.pieces_at(earlier, disk.target, c.index)
        if before is None:
            before = [blockhash.zero_piece(n) for n in lengths]
        pieces = [p if p is not None else before[i] for i, p in enumerate(pieces)]
    known = [p for p in pieces if p is not None]
    digest = blockhash.block_digest(known)
    if all(p == blockhash.zero_piece(n) for p, n in zip(known, lengths, strict=True)):
        return (c.index, digest, None)
    return (c.index, digest, cat.join_pieces(known))


def _parent_file(parent: Backup | None, target: str) -> str:
    assert parent is not None
    return next(d.file for d in parent.disks if d.target == target)


def _make_image(path: Path, size: int, backing: Path | None) -> None:
    """The backup's qcow2; an increment's has the one it builds on as backing file,
    named relative to it, so the directory can move as a whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        cmd += ["-b", os.path.relpath(backing, path.parent), "-F", "qcow2"]
    cmd += [str(path), str(size)]
    try:
        made = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise ComponentError(f"qemu-img create {path} did not end within 60 s") from None
    if made.returncode != 0:
        raise ComponentError(f"qemu-img create {path}: {made.stderr.strip()}")


def summary(record: dict[str, Any]) -> str:
    disks = record.get("disks") or {}
    read = sum(d.get("read", 0) for d in disks.values())
    stored = sum(d.get("stored", 0) for d in disks.values())
    from p2v.units import format_size

    return (f"{record.get('kind')} backup {record.get('folder')} of {record.get('vm')}: "
            f"{format_size(read)} read, {format_size(stored)} stored, "
            f"{record.get('consistency')}")  # fmt: skip

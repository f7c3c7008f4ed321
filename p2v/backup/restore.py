"""`p2v restore DIR` as a job on the step runner: a point of a backup chain rebuilt
as files (--to), as a VM on a libvirt host (--define) or booted headless to see that
it comes up (--check, a restore drill).

Steps: `check` (the point, where each disk goes, nothing in the way), `restore
TARGET` per disk (a child copy job reads the point's qcow2, with the backups it
builds on as backing files, and writes the disk; the digest of what it read must be
the one recorded when the backup was taken), then for --define `upload TARGET` per
disk and `define`, for --check `boot`, and last `clean up` (the scratch copies of
--define and --check removed). A resume goes on with each copy where it stopped.

The backup directory is locked while the job runs (a backup or a prune would change
the files it reads), and so is the VM name --define makes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import tempfile
import uuid as uuids
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2v.backup.catalog import Backup, Catalog, Disk, directory_lock
from p2v.backup.chain import needed_bytes, point
from p2v.backup.define import backed_up_uuid, left_out, vm_xml
from p2v.backup.drill import DEFAULT_DRILL_TIMEOUT, drill_xml
from p2v.errors import BackupMismatch, InputError
from p2v.host import bootcheck, virt
from p2v.host.virt import DEFAULT_URI, storage
from p2v.jobs.journal import Journal, Lock, vm_name_lock
from p2v.jobs.runner import Kind, Run, Step
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT, jobs
from p2v.transfer.progress import Reporter
from p2v.units import format_size

Say = Callable[[str], None]
SCRATCH_ROOT = "/var/tmp"  # kept across a reboot, for a resume; QEMU may read it


@dataclass(frozen=True)
class Request:
    directory: str
    at: str | None = None  # a backup's name or number; the job records its folder
    to: str | None = None  # a file for a one-disk VM, else a directory
    define: str | None = None  # the VM's name on `uri`
    check: bool = False  # a restore drill on this machine's libvirt `uri`
    uri: str = DEFAULT_URI
    pool: str = "default"
    overwrite: bool = False
    bwlimit: int | None = None  # bytes/s written
    boot_timeout: float = DEFAULT_DRILL_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _describe(params: dict[str, Any], result: dict[str, Any]) -> str:
    r = params.get("request", {})
    where = (f"as {r.get('define')} on {r.get('uri')}" if r.get("define") else
             "to boot it (a drill)" if r.get("check") else f"to {r.get('to')}")  # fmt: skip
    return f"restore of {r.get('at')} from {r.get('directory')} {where}"


def _outcome(result: dict[str, Any]) -> str | None:
    if "booted" in result:
        return "came up" if result["booted"] else f"did not come up: {result.get('line')}"
    if result.get("name"):
        return f"{result['name']} defined"
    disks = result.get("disks") or {}
    return ", ".join(f"{t} {d['digest']}" for t, d in disks.items()) or None


KIND = Kind("restore", _describe, _outcome)


def run(
    request: Request, journal: Journal, say: Say, reporter: Reporter
) -> tuple[str, dict[str, Any]]:
    """Check, record and carry out the restore `request` asks for: (job id, result)."""
    directory = Path(request.directory).resolve()
    with Catalog(directory) as catalog:
        backup = point(catalog, request.at)
    request = dataclasses.replace(request, directory=str(directory), at=backup.folder())
    locks = _locks(request)
    for lock in locks:
        journal.refuse_held(lock)
    _refusals(request, backup)
    job = Run.start(KIND, {"request": request.to_json()}, journal, say)
    say(f"job {job.job_id} (`p2v show {job.job_id}` shows its steps)")
    return job.job_id, job.execute(lambda: _steps(job, request, locks, reporter))


def resume(
    job_id: str, journal: Journal, say: Say, reporter: Reporter, bwlimit: int | None = None
) -> tuple[str, dict[str, Any]]:
    """Go on with a restore job that stopped (`bwlimit`: a new limit for the rest)."""
    job = Run.resume(KIND, job_id, journal, say)
    request = Request(**job.params["request"])
    if bwlimit:
        request = dataclasses.replace(request, bwlimit=bwlimit)

    def drive() -> dict[str, Any]:
        if job.previous.get("check", {}).get("state") != "done":
            raise InputError(f"job {job_id} stopped before its checks: start it again")
        return _steps(job, request, _locks(request), reporter)

    return job_id, job.execute(drive)


def _locks(request: Request) -> list[Lock]:
    directory = request.directory
    locks = [directory_lock(directory)]
    if request.define:
        with virt.connection(request.uri, request.connect_timeout) as conn:
            host = virt.identity(conn).uuid
        locks.append(vm_name_lock(host, request.define, f"{request.define} on {request.uri}"))
    return locks


def _refusals(request: Request, backup: Backup) -> None:
    """What would stop the restore half-way, said before anything is made."""
    if request.check and request.uri not in virt.LOCAL_URIS:
        raise InputError(f"a restore drill boots on this machine (qemu:///session or "
                         f"qemu:///system), where the backup is restored, not on "
                         f"{request.uri}")  # fmt: skip
    needed = needed_bytes(Path(request.directory), backup)
    if request.to:
        targets = _targets(backup, request.to)
        for where in targets.values():
            if os.path.exists(where) and not request.overwrite:
                raise InputError(f"{where} exists; add --overwrite to replace it")
        _room(os.path.dirname(os.path.abspath(next(iter(targets.values())))), needed)
    else:
        _room(SCRATCH_ROOT, needed)
    if not request.define:
        return
    with virt.connection(request.uri, request.connect_timeout) as conn:
        pool = virt.pool(conn, request.pool)
        storage.refresh(pool)
        problems = []
        if virt.lookup(conn, request.define) is not None:
            problems.append(f"{request.uri} has a domain named {request.define} already")
        problems += [f"the pool {request.pool} holds a volume {v} already"
                     for v in _volumes(backup, request.define).values()
                     if virt.volume(pool, v) is not None]  # fmt: skip
        if needed > (free := virt.free_bytes(pool)):
            problems.append(f"the pool {request.pool} on {request.uri} has "
                            f"{format_size(free)} free, the disks need "
                            f"{format_size(needed)}")  # fmt: skip
        if problems:
            raise InputError("; ".join(problems))


def _room(directory: str, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise InputError(f"{directory} has {format_size(free)} free, the restored disks need "
                         f"{format_size(needed)}")  # fmt: skip


def _targets(backup: Backup, to: str) -> dict[str, str]:
    """Where each disk goes: the file `to` for a one-disk VM, else TARGET.qcow2 in the
    directory `to`."""
    if len(backup.disks) == 1 and not os.path.isdir(to):
        return {backup.disks[0].target: to}
    if not os.path.isdir(to):
        raise InputError(f"{backup.folder()} holds {len(backup.disks)} disks: --to must be a "
                         "directory, which gets TARGET.qcow2 for each")  # fmt: skip
    return {d.target: os.path.join(to, f"{d.target}.qcow2") for d in backup.disks}


def _volumes(backup: Backup, name: str) -> dict[str, str]:
    return {d.target: f"{name}-{d.target}.qcow2" for d in backup.disks}


def _steps(job: Run, request: Request, locks: list[Lock], reporter: Reporter) -> dict[str, Any]:
    for lock in locks:
        job.lock(lock)
    directory = Path(request.directory)
    with Catalog(directory) as catalog:
        backup = catalog.find(str(request.at))
    job.record = {"backup": backup.folder()}

    def check() -> dict[str, Any]:
        if request.to:
            return {"targets": _targets(backup, request.to)}
        scratch = tempfile.mkdtemp(prefix=f"p2v-restore-{job.job_id}-", dir=SCRATCH_ROOT)
        os.chmod(scratch, 0o711)  # QEMU may run as another user
        return {"scratch": scratch}

    found = job(Step("check", check))
    if scratch := found.get("scratch"):
        os.makedirs(scratch, mode=0o711, exist_ok=True)  # gone after a reboot: copied again
    targets = found.get("targets") or {
        d.target: os.path.join(str(scratch), f"{d.target}.qcow2") for d in backup.disks
    }
    disks = {}
    for disk in backup.disks:
        copy = functools.partial(_copy, job, request, backup, disk, targets[disk.target], reporter)
        done = job(Step(f"restore {disk.target}", copy, still=_still_there))
        disks[disk.target] = {"path": done["path"], "digest": done["digest"]}
    result: dict[str, Any] = {"backup": backup.folder(), "disks": disks}
    if request.define:
        result |= _define(job, request, backup, targets)
    elif request.check:
        xml = drill_xml(backup.domain_xml, targets, str(Path(str(scratch), "console.log")),
                        Path(str(scratch), "VARS.fd"))  # fmt: skip
        result |= job(Step("boot", lambda: _boot(job, request, xml, Path(str(scratch))),
                           again=True))  # fmt: skip
    if scratch:
        job(Step("clean up", lambda: _remove(str(scratch)), again=True))
        result["disks"] = {t: {"digest": d["digest"]} for t, d in disks.items()}
    return result


def _still_there(detail: dict[str, Any]) -> bool:
    return os.path.exists(detail.get("path", ""))


def _copy(
    job: Run, request: Request, backup: Backup, disk: Disk, where: str, reporter: Reporter
) -> dict[str, Any]:
    """Step `restore TARGET`: the point's disk copied to `where`, going on with the copy
    an earlier run began; what was read must have the recorded digest."""
    name = f"restore {disk.target}"
    copied = jobs.go_on(job.child(), job.journal, reporter, request.bwlimit,
                        connect_timeout=request.connect_timeout)  # fmt: skip
    if copied is None:
        source = Path(request.directory, disk.file)
        copy = jobs.CopyRequest(
            source=str(source), target=where, input_format="qcow2",
            overwrite=request.overwrite or name in job.previous or not request.to,
            bwlimit=request.bwlimit, connect_timeout=request.connect_timeout,
        )  # fmt: skip
        copied = jobs.copy(copy, job.journal, reporter, on_job=job.adopt, parent=job.job_id)
    if copied.digest != disk.digest:
        if os.path.isfile(where):  # never left to be taken for the backed-up disk
            os.unlink(where)
        raise BackupMismatch(
            f"{disk.target} as read from {backup.folder()} has the digest {copied.digest}, "
            f"not {disk.digest} as recorded when it was backed up; {where} is removed "
            "(`p2v backup verify` names the damaged file)"
        )
    job.say(f"{disk.target} of {backup.folder()} restored to {where}, digest checked")
    return {"child": copied.job_id, "path": where, "digest": copied.digest}


def _define(job: Run, request: Request, backup: Backup, files: dict[str, str]) -> dict[str, Any]:
    """Steps `upload TARGET` (each restored disk into a qcow2 volume of the pool, so
    the VM can be backed up incrementally again) and `define` (the backed-up
    definition as NAME, on those volumes, with the backed-up VM's UUID where the host
    has no domain with it, and its MAC addresses)."""
    name = str(request.define)
    volumes = _volumes(backup, name)
    paths = {}
    for disk in backup.disks:
        step = f"upload {disk.target}"
        upload = functools.partial(_upload, job, request, step, volumes[disk.target], disk.size,
                                   files[disk.target])  # fmt: skip
        done = job(Step(step, upload, needs=(f"restore {disk.target}",)))
        paths[disk.target] = done["path"]

    def define() -> dict[str, Any]:
        with virt.connection(request.uri, request.connect_timeout) as conn:
            # The UUID is chosen and recorded first: a run cut short after libvirt
            # defined the domain knows it as its own.
            uuid = job.earlier("define").get("uuid") or _uuid(conn, backup.domain_xml)
            job.remember(uuid=uuid)
            domain = virt.lookup(conn, name)
            if domain is not None and domain.UUIDString() != uuid:
                raise InputError(f"{request.uri} has a domain named {name} already")
            if domain is None:
                virt.define(conn, vm_xml(backup.domain_xml, name, paths, uuid))
        job.say(f"{name} defined on {request.uri} from {backup.folder()}, with the MAC "
                f"addresses of {backup.vm}: do not start both on one network")  # fmt: skip
        if missing := left_out(backup.domain_xml, volumes):
            job.say(f"left out of {name}: {', '.join(missing)} (not in the backup: "
                    "read-only or shared)")  # fmt: skip
        return {"uuid": uuid}

    defined = job(Step("define", define))
    return {"name": name, "uri": request.uri, "uuid": defined["uuid"],
            "volumes": {t: f"{request.pool}/{v}" for t, v in volumes.items()}}  # fmt: skip


def _uuid(conn: Any, xml: str) -> str:
    """The backed-up VM's UUID, unless the host has a domain with it: then a new one."""
    kept = backed_up_uuid(xml)
    if kept and virt.lookup_uuid(conn, kept) is None:
        return kept
    return str(uuids.uuid4())


def _upload(
    job: Run, request: Request, step: str, name: str, size: int, file: str
) -> dict[str, Any]:
    with virt.connection(request.uri, request.connect_timeout) as conn:
        pool = virt.pool(conn, request.pool)
        storage.refresh(pool)
        vol = virt.volume(pool, name)
        if vol is not None:
            if not job.earlier(step).get("made"):
                raise InputError(f"the pool {request.pool} holds a volume {name} already")
            storage.delete_volume(vol)  # this job's own, from a run cut short
        vol = virt.create_volume(pool, name, size, "qcow2")
        job.remember(made=True)
        try:
            storage.upload_file(conn, vol, file)
        except BaseException:
            storage.delete_volume(vol)  # never left half-written
            raise
        job.say(f"uploaded to {request.pool}/{name} on {request.uri}")
        return {"made": True, "path": storage.path(vol)}


def _boot(job: Run, request: Request, xml: str, scratch: Path) -> dict[str, Any]:
    """Step `boot`: the restored disks booted headless, the console read until the
    guest has come up (or the time is up); the transient domain gone after."""
    job.say(f"booting {request.at} headless (up to {request.boot_timeout:.0f} s)")
    with virt.connection(request.uri, request.connect_timeout) as conn:
        check = bootcheck.verify_boot(conn, xml, scratch / "console.log", request.boot_timeout)
    job.say(("came up: " if check.booted else "did not come up: ") + check.line)
    return {"booted": check.booted, "line": check.line, "seconds": round(check.seconds, 1)}


def _remove(scratch: str) -> dict[str, Any]:
    shutil.rmtree(scratch, ignore_errors=True)
    return {"removed": scratch}

"""A VM as the source of a clone: found on one of the clone's hosts, and its one
disk taken, as it was at one instant, into an image on this machine, from which
the golden is sealed (or which is the golden itself, with --personalize none).

A shut-off VM's volume is copied through its host's libvirt (a child copy job). A
running VM is cloned only with --live: libvirt's pull-mode backup, without a
checkpoint, has QEMU export the disk as it was when the backup began, while the
guest runs on; the guest's filesystems are frozen through its agent for that
instant when it has one (else the point is crash-consistent, as after a power
cut). The transfer engine reads the export once, and the backup job is ended.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any

from p2v.clone import golden as goldens
from p2v.errors import InputError
from p2v.host import virt
from p2v.host.virt import backups, domains, storage
from p2v.host.virt.domainxml import DomainXml
from p2v.jobs.journal import Lock, vm_lock
from p2v.jobs.runner import Run, Step
from p2v.paths import state_dir
from p2v.transfer import jobs
from p2v.transfer.endpoints import export as export_nbd
from p2v.transfer.endpoints import open_target
from p2v.transfer.engine import Transfer
from p2v.transfer.progress import Reporter


@dataclass(frozen=True)
class Vm:
    """The VM cloned, as found when the job was planned."""

    name: str
    uri: str
    uuid: str
    host: str  # its host's UUID
    running: bool  # running or paused: read through a backup export (--live)
    target: str  # its disk's target (vda)
    volume: str  # its disk as volume:POOL/NAME@URI
    format: str  # the volume's format
    size: int  # the disk's capacity
    allocation: int  # what the volume takes on its host
    firmware: str  # bios or uefi
    memory_mib: int
    vcpus: int
    nics: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lock(self) -> Lock:
        return vm_lock(self.host, self.uuid, f"{self.name} on {self.uri}")


def find(name: str, uris: list[str], live: bool, connect_timeout: float) -> Vm | None:
    """The VM named `name` on one of the hosts, checked to be clonable; None when no
    host has one."""
    found = []
    for uri in uris:
        with virt.connection(uri, connect_timeout) as conn:
            domain = virt.lookup(conn, name)
            if domain is not None:
                found.append(_vm(conn, domain, uri, live))
    if len(found) > 1:
        raise InputError(f"{name} is a VM on {found[0].uri} and on {found[1].uri}: clone it "
                         "from one (give only its host, or seal it first with `p2v golden "
                         "seal`)")  # fmt: skip
    return found[0] if found else None


def _vm(conn: Any, domain: Any, uri: str, live: bool) -> Vm:
    name = domain.name()
    state = virt.state(domain)
    running = state in ("running", "paused")
    if running and not live:
        raise InputError(f"{name} is {state}: clone it with --live (its disk as it is at one "
                         "instant, while it runs on), or shut it down first")  # fmt: skip
    if not running and state != "shut off":
        raise InputError(f"{name} is {state}: a VM is cloned running (--live) or shut off")
    xml = DomainXml.parse(domains.definition(domain))
    target, vol, spec = goldens.vm_volume(conn, xml, uri)
    if not running and storage.backing(vol):
        raise InputError(f"{name}'s disk has a backing file (a snapshot overlay or a linked "
                         "clone): clone it running with --live, which reads it whole")  # fmt: skip
    return Vm(
        name=name, uri=uri, uuid=domain.UUIDString(), host=virt.identity(conn).uuid,
        running=running, target=target, volume=str(spec),
        format=storage.format_of(vol), size=storage.capacity(vol),
        allocation=storage.allocation(vol), firmware=xml.firmware,
        memory_mib=xml.memory_kib // 1024, vcpus=xml.vcpus, nics=len(xml.nics),
    )  # fmt: skip


def directory() -> str:
    """Where captured disks and goldens sealed from VMs are kept."""
    path = state_dir() / "goldens"
    path.mkdir(mode=0o700, exist_ok=True)
    return str(path)


def check_room(vm: Vm) -> None:
    """Room here for its disk twice: as captured, and sealed."""
    free = shutil.disk_usage(directory()).free
    if free < 2 * vm.allocation:
        raise InputError(f"{directory()} has {free >> 20} MiB free; {vm.name}'s disk takes "
                         f"{vm.allocation >> 20} MiB, and is kept twice (taken, then "
                         "sealed)")  # fmt: skip


def capture(
    job: Run,
    vm: Vm,
    path: str,
    reporter: Reporter,
    tls_certs: str | None,
    nbd_port: int,
    connect_timeout: float,
) -> dict[str, Any]:
    """Step `capture`: the VM's disk into `path` (qcow2), whole. A run cut short
    takes it again from the start: a point in time cannot be gone on with."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    if not vm.running:
        copy = jobs.CopyRequest(
            source=vm.volume, target=path, overwrite=True,
            output_format=goldens.copy_format(vm.format),
            connect_timeout=connect_timeout,
        )  # fmt: skip
        copied = jobs.copy(copy, job.journal, reporter, on_job=job.adopt, parent=job.job_id)
        return {"path": path, "live": False, "child": copied.job_id, "read": vm.allocation,
                "digest": copied.digest}  # fmt: skip
    with virt.connection(vm.uri, connect_timeout) as conn:
        domain = virt.find(conn, vm.uuid)
        if job.earlier("capture").get("begun"):
            backups.end(domain)  # the export a run cut short left
        state = virt.state(domain)
        if state not in ("running", "paused"):
            raise InputError(f"{vm.name} is {state} now: a live clone reads a running VM")
        export = export_nbd.listen_at(vm.uri, conn, nbd_port)
        job.remember(begun=True)
        try:
            started = time.monotonic()
            begun = backups.begin(domain, backups.backup_xml(export, [vm.target], None), None,
                                  quiesce=state == "running")  # fmt: skip
            held = time.monotonic() - started
            consistency = "frozen" if begun.frozen else "crash-consistent"
            why = begun.why_not_frozen if state == "running" else f"the VM is {state}"
            job.say(f"{vm.name}'s disk taken at one instant ({consistency}"
                    f"{f': {why}' if why else ''}); reading it while it runs on")  # fmt: skip
            source = export_nbd.reader(export, vm.target, vm.name, tls_certs, connect_timeout)
            with source:
                target = open_target(path, source.size, output_format="qcow2", overwrite=True)
                with target:
                    reporter.start(job.job_id, f"{vm.name}'s {vm.target} -> {path}", source.size)
                    outcome = Transfer(source, target, target_zero=True,
                                       reporter=reporter).run()  # fmt: skip
        finally:
            backups.end(domain)
            export_nbd.drop(export)
    return {"path": path, "live": True, "consistency": consistency, "unfrozen": why,
            "begin_s": round(held, 3), "read": outcome.snapshot.read,
            "digest": outcome.digest}  # fmt: skip


def golden_of(
    job: Run,
    vm: Vm,
    sealing: bool,
    reporter: Reporter,
    tls_certs: str | None,
    nbd_port: int,
    connect_timeout: float,
) -> dict[str, Any]:
    """Steps `capture` (the VM's disk taken at one instant, into an image here) and,
    when `sealing`, `seal` (a child golden job seals a copy of it, and the image taken
    is removed): the golden the clone job `job` clones."""
    stem = os.path.join(directory(), f"{vm.name}-{job.job_id}")
    golden_path = f"{stem}.qcow2"
    taken = f"{stem}.taken.qcow2" if sealing else golden_path

    def take() -> dict[str, Any]:
        return capture(job, vm, taken, reporter, tls_certs, nbd_port, connect_timeout)

    captured = job(Step("capture", take, still=lambda _: os.path.exists(taken)
                        or (sealing and os.path.exists(golden_path))))  # fmt: skip
    if not sealing:
        os.chmod(taken, 0o444)  # clones build on it: nothing may write it
        return {"name": vm.name, "version": job.job_id.rpartition("-")[2], "path": taken,
                "digest": captured.get("digest"), "size": vm.size, "firmware": vm.firmware,
                "nic_names": [], "first_boot": "none", "root": None}  # fmt: skip

    def seal() -> dict[str, Any]:
        sealed = _seal(job, vm, taken, golden_path, reporter, connect_timeout)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(taken)  # the golden holds it now
        return {"golden": sealed}

    golden = job(Step("seal", seal, needs=("capture",),
                      still=lambda _: os.path.exists(golden_path)))["golden"]  # fmt: skip
    return dict(golden)


def _seal(
    job: Run, vm: Vm, taken: str, to: str, reporter: Reporter, connect_timeout: float
) -> dict[str, Any]:
    """The seal's child job: made, gone on with, or found done."""
    earlier = job.child()
    if earlier and (record := job.journal.get(earlier)).state == "done" and record.result:
        return dict(record.result)
    try:
        if earlier:
            return goldens.resume(earlier, job.journal, job.say, reporter)[1]
        seal = goldens.Request(source=taken, to=to, name=vm.name,
                               connect_timeout=connect_timeout)  # fmt: skip
        return goldens.run(seal, job.journal, job.say, reporter, parent=job.job_id,
                           on_job=job.adopt)[1]  # fmt: skip
    except InputError as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(taken)  # taken again by a new job: no image left here meanwhile
        raise InputError(f"{vm.name}'s disk cannot be sealed ({error}); clone it as it is "
                         "with --personalize none") from None  # fmt: skip

"""A cold (static) migration of a shut-off VM: its disks copied by the transfer engine
from volume to volume through the two libvirt connections (read back on the
destination and compared by digest), then the same definition (UUID, MACs, NVRAM
path) defined there, with the disks' paths there."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

from p2v.errors import InputError, MigrationError
from p2v.host import virt
from p2v.host.virt import domains, storage
from p2v.host.virt.domainxml import DomainXml
from p2v.jobs.journal import Journal
from p2v.migrate.checks import DiskMove, Plan, Request
from p2v.transfer import jobs
from p2v.transfer.endpoints.volume import VolumeSpec

START_TIMEOUT = 60.0


def source_spec(disk: DiskMove, request: Request) -> str:
    return str(VolumeSpec(disk.source_pool, disk.volume, request.source))


def target_spec(disk: DiskMove, request: Request) -> str:
    return str(VolumeSpec(disk.dest_pool, posixpath.basename(disk.dest_path), request.destination))


def copy_disk(
    disk: DiskMove,
    request: Request,
    journal: Journal,
    job_id: str,
    reporter: Any,
    earlier_copy: str | None,
    remember: Callable[[str], None],
) -> jobs.CopyResult:
    """Copy one disk's volume, resuming the copy an interrupted run began; the target
    is read back and must have the source's digest."""
    earlier = jobs.go_on(
        earlier_copy, journal, reporter, _bwlimit(request),
        connect_timeout=request.connect_timeout, io_timeout=request.io_timeout,
    )  # fmt: skip
    if earlier is not None:
        return earlier
    copy = jobs.CopyRequest(
        source=source_spec(disk, request), target=target_spec(disk, request),
        overwrite=earlier_copy is not None, verify=True, bwlimit=_bwlimit(request),
        connect_timeout=request.connect_timeout, io_timeout=request.io_timeout,
    )  # fmt: skip
    return jobs.copy(copy, journal, reporter, on_job=remember, parent=job_id)


def _bwlimit(request: Request) -> int | None:
    return request.bandwidth_mib << 20 if request.bandwidth_mib else None


def check_copied(result: jobs.CopyResult, disk: DiskMove) -> None:
    if result.verified is not True:
        raise InputError(f"disk {disk.target}: the copy on the destination does not read back "
                         f"with the source's digest {result.digest}")  # fmt: skip


def copy_nvram(
    src: Any, dst: Any, nvram: str, request: Request, journal: Journal, job_id: str,
    reporter: Any,
) -> jobs.CopyResult:  # fmt: skip
    """Copy the UEFI variable store (boot entries, Secure Boot keys) to the same path
    there, through pools over its directory on both hosts."""
    directory, name = posixpath.split(nvram)
    with storage.directory_pool(src, directory) as here, \
            storage.directory_pool(dst, directory) as there:  # fmt: skip
        storage.refresh(here)
        storage.refresh(there)
        copy = jobs.CopyRequest(
            source=str(VolumeSpec(storage.pool_name(here), name, request.source)),
            target=str(VolumeSpec(storage.pool_name(there), name, request.destination)),
            overwrite=True, verify=True, connect_timeout=request.connect_timeout,
            io_timeout=request.io_timeout,
        )  # fmt: skip
        return jobs.copy(copy, journal, reporter, parent=job_id)


def define(dst: Any, plan: Plan, xml: str) -> None:
    """Define the VM on the destination from its definition `xml` (read from the
    source), its disks at their paths there."""
    described = DomainXml.parse(xml)
    moved = {d.target: d for d in plan.disks}
    for vdisk in described.disks:
        if vdisk.target in moved:
            vdisk.source = moved[vdisk.target].dest_path
    for name in {disk.dest_pool for disk in plan.copied}:
        # Made as raw bytes: libvirt learns the format (qcow2, ...) when it looks again.
        storage.refresh(storage.pool(dst, name))
    # One defined by an interrupted run has the same name and UUID: redefined in place,
    # its (copied) NVRAM kept.
    virt.define(dst, described.to_xml())


def start_if_autostart(dst: Any, plan: Plan, uri: str) -> bool:
    """The VM defined at `uri`, started when it was set to start with its host;
    whether it was."""
    domain = virt.lookup_uuid(dst, plan.uuid)
    if domain is None:
        raise MigrationError(f"{uri} lost {plan.vm}'s definition")
    if not plan.autostart:
        return False
    domains.set_autostart(domain, True)
    if virt.state(domain) != "running":
        virt.start(domain)
    virt.wait_for_state(domain, "running", START_TIMEOUT)
    return True

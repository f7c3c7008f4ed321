"""A cold (static) migration of a shut-off VM: its disks copied by the transfer engine
from volume to volume through the two libvirt connections (read back on the
destination and compared by digest), then the same definition (UUID, MACs, NVRAM
path) defined there, with the disks' paths there.

Nothing here deletes the only good copy of the guest's data. Each source volume's
identity (sizes, modification time) is recorded when its copy begins and compared
before the VM is defined there and before the source lets it go: a VM started
meanwhile has newer data than its copy, and the move stops. With --delete-source the
copies are first made durable on the destination (libvirt's synced clone, read back),
since an upload leaves them in that host's page cache.
"""

from __future__ import annotations

import posixpath
from typing import Any

from p2v.errors import InputError, MigrationError
from p2v.host import virt
from p2v.host.virt import domains, storage
from p2v.host.virt.domainxml import DomainXml
from p2v.jobs.runner import Run
from p2v.migrate.checks import DiskMove, Plan, Request
from p2v.transfer import jobs
from p2v.transfer.endpoints import open_source
from p2v.transfer.endpoints.volume import VolumeSpec

START_TIMEOUT = 60.0
STAGING = ".p2v-staging"  # a copy not yet durable, with --delete-source


def source_volume(src: Any, disk: DiskMove) -> Any:
    vol = storage.volume(storage.pool(src, disk.source_pool), disk.volume)
    if vol is None:
        raise MigrationError(f"disk {disk.target}: {disk.path} is gone from its pool")
    return vol


def copy_disk(
    run: Run, src: Any, disk: DiskMove, request: Request, reporter: Any
) -> dict[str, Any]:
    """Step `copy DISK`: the volume copied, going on with the copy an interrupted run
    began unless the source changed since; the target is read back and must have the
    source's digest. The source's identity is recorded before the first byte moves."""
    name = f"copy {disk.target}"
    now = storage.identity(source_volume(src, disk))
    earlier = run.child() if run.earlier(name).get("identity") == now else None
    run.remember(identity=now)
    copied = jobs.go_on(
        earlier, run.journal, reporter, _bwlimit(request),
        connect_timeout=request.connect_timeout, io_timeout=request.io_timeout,
    )  # fmt: skip
    if copied is None:
        target = VolumeSpec(disk.dest_pool, _staged(posixpath.basename(disk.dest_path), request),
                            request.destination)  # fmt: skip
        if disk.replaces and name not in run.previous:
            with virt.connection(request.destination, request.connect_timeout) as dst:
                left_as_it_was(dst, disk, request)
        copy = jobs.CopyRequest(
            source=str(VolumeSpec(disk.source_pool, disk.volume, request.source)),
            target=str(target),
            overwrite=name in run.previous or request.delete_source or disk.replaces is not None,
            held_from=_held_from(disk, request) if name not in run.previous else None,
            verify=True, bwlimit=_bwlimit(request), connect_timeout=request.connect_timeout,
            io_timeout=request.io_timeout,
        )  # fmt: skip
        copied = jobs.copy(copy, run.journal, reporter, on_job=run.adopt, parent=run.job_id)
    if copied.verified is not True:
        raise InputError(f"disk {disk.target}: the copy on the destination does not read back "
                         f"with the source's digest {copied.digest}")  # fmt: skip
    return {"identity": now, "child": copied.job_id, "digest": copied.digest, "result": {
        "target": disk.target, "digest": copied.digest, "size": copied.size,
        "copied": copied.copied, "unchanged": copied.unchanged, "verified": copied.verified,
    }}  # fmt: skip


def _held_from(disk: DiskMove, request: Request) -> str | None:
    """The copy job whose block digests describe the earlier copy this one replaces
    in place (a move back): only the blocks that changed since are sent."""
    if disk.replaces is None or request.delete_source:  # then it lands under another name
        return None
    return disk.replaces.get("copy_job")


def left_as_it_was(dst: Any, disk: DiskMove, request: Request) -> Any:
    """The copy an earlier move left where this one goes (None if gone), still as it
    was left: MigrationError when someone took it into use since the checks."""
    assert disk.replaces is not None
    vol = storage.volume_at(dst, disk.dest_path)
    if vol is not None and storage.identity(vol) != disk.replaces["identity"]:
        raise MigrationError(f"{disk.dest_path} on {request.destination} changed since the "
                             "checks: it is left there; the move stops")  # fmt: skip
    return vol


def _bwlimit(request: Request) -> int | None:
    return request.bandwidth_mib << 20 if request.bandwidth_mib else None


def _staged(name: str, request: Request) -> str:
    """Where a copy lands: its own name, or a staging one until it is made durable."""
    return name + STAGING if request.delete_source else name


def nvram_identity(src: Any, nvram: str) -> dict[str, Any] | None:
    """The UEFI variable store's identity; None while there is none (a VM defined but
    never started: libvirt makes it from its template at the first start)."""
    with storage.file_volume(src, nvram) as vol:
        return None if vol is None else storage.identity(vol)


def copy_nvram(
    run: Run, src: Any, dst: Any, nvram: str, request: Request, reporter: Any
) -> dict[str, Any]:
    """Step `copy nvram`: the UEFI variable store (boot entries, Secure Boot keys) to
    the same path there, through pools over its directory on both hosts (made there
    if missing). A store not made yet is nothing to copy: the destination makes it
    at the first start, as the source would have."""
    identity = nvram_identity(src, nvram)
    run.remember(path=nvram, identity=identity)
    if identity is None:
        return {"path": nvram, "identity": None, "absent": True}
    directory, name = posixpath.split(nvram)
    with storage.directory_pool(src, directory) as here, \
            storage.directory_pool(dst, directory, make=True) as there:  # fmt: skip
        storage.refresh(there)
        copy = jobs.CopyRequest(
            source=str(VolumeSpec(storage.pool_name(here), name, request.source)),
            target=str(VolumeSpec(storage.pool_name(there), _staged(name, request),
                                  request.destination)),
            overwrite=True, verify=True, connect_timeout=request.connect_timeout,
            io_timeout=request.io_timeout,
        )  # fmt: skip
        copied = jobs.copy(copy, run.journal, reporter, on_job=run.adopt, parent=run.job_id)
    return {"path": nvram, "identity": identity, "child": copied.job_id,
            "digest": copied.digest, "verified": copied.verified}  # fmt: skip


def changed(src: Any, plan: Plan, run: Run) -> list[str]:
    """The source's disks (and NVRAM) whose identity is not what it was when their copy
    began, each with what changed."""
    found = []
    for disk in plan.copied:
        then = run.found(f"copy {disk.target}").get("identity")
        if then != (now := storage.identity(source_volume(src, disk))):
            found.append(f"{disk.target} ({_difference(then, now)})")
    for step in ["copy nvram", *(f"copy {p}" for p in plan.nvram_files)]:
        nvram = run.found(step)
        if nvram and nvram.get("identity") != (store := nvram_identity(src, nvram["path"])):
            if store is None:
                raise MigrationError(f"the UEFI variable store {nvram['path']} is gone")
            found.append(f"{nvram['path']} ({_difference(nvram.get('identity'), store)})")
    return found


def _difference(then: dict[str, Any] | None, now: dict[str, Any]) -> str:
    if not then:
        return "made since"
    return ", ".join(f"{k} {then.get(k)} -> {v}" for k, v in now.items() if then.get(k) != v)


def check_shut_off(src: Any, plan: Plan, request: Request, then: str) -> None:
    """MigrationError unless the VM is still shut off at the source; `then` says what
    is not done because of it."""
    domain = virt.lookup_uuid(src, plan.uuid)
    if domain is None:
        raise MigrationError(f"{plan.vm} is gone from {request.source}")
    if (state := virt.state(domain)) != "shut off":
        raise MigrationError(
            f"{plan.vm} is {state} on {request.source} again: its disks are changing, so "
            f"the cold migration stops and {then}; shut it down and resume, or migrate it live"
        )


def check_unchanged(src: Any, plan: Plan, run: Run, request: Request, then: str) -> None:
    """MigrationError unless the VM is still shut off at the source with the data its
    copies hold; `then` says what is not done because of it."""
    check_shut_off(src, plan, request, then)
    if stale := changed(src, plan, run):
        raise MigrationError(
            f"{plan.vm} changed on {request.source} since its copy began: "
            f"{'; '.join(stale)}. Its copy on {request.destination} is stale, so {then}; "
            f"`p2v migrate --resume {run.job_id}` copies what changed again"
        )


def make_durable(dst: Any, pool: str, name: str, digest: str | None, request: Request) -> dict:
    """Step `durable ...`: the staged copy `name` + STAGING of pool `pool` cloned as
    `name` by the destination's libvirt, synced to its disk; a raw clone is read back
    and must have the source's digest. The staged copy is deleted afterwards."""
    there = storage.pool(dst, pool)
    storage.refresh(there)  # the format libvirt sees decides how it clones
    staged = storage.volume(there, name + STAGING)
    done = storage.volume(there, name)
    if staged is None:
        if done is None:
            raise MigrationError(f"{request.destination} lost the copy {name + STAGING}")
        return {"synced": True, "kept": "an earlier run had made it durable"}
    if done is not None:  # an earlier run died while cloning: clone again
        storage.delete_volume(done)
    fmt = storage.format_of(staged)
    storage.durable_clone(staged, name)
    read_back = None
    if fmt == "raw":
        with open_source(str(VolumeSpec(pool, name, request.destination)),
                         connect_timeout=request.connect_timeout) as endpoint:  # fmt: skip
            read_back = jobs.endpoint_digest(endpoint)
        if read_back != digest:
            raise MigrationError(f"the synced copy {name} on {request.destination} does not "
                                 f"read back with the source's digest {digest}")  # fmt: skip
    storage.delete_volume(staged)
    return {"synced": True, "format": fmt, "digest": read_back}


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


def release(src: Any, plan: Plan, request: Request, nvram_durable: bool) -> dict[str, Any]:
    """The source lets the VM go: set not to start with its host first, then undefined.
    Its NVRAM file stays unless its copy was made durable there (--delete-source)."""
    domain = virt.lookup_uuid(src, plan.uuid)
    if domain is None:
        return {"undefined": True, "already": True}
    domains.set_autostart(domain, False)
    domains.release(domain, keep_nvram=not nvram_durable)
    del domain
    if virt.lookup_uuid(src, plan.uuid) is not None:
        raise MigrationError(f"{request.source} still has {plan.vm} defined")
    return {"undefined": True, "autostart_cleared": plan.autostart}


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

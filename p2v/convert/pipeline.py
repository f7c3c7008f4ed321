"""The conversion, step by step, each step recorded in the journal.

inventory -> plan (inspect the guest through overlays, refuse early) -> fix-ups and
free-space trim (in the overlays) -> copy each disk (the transfer engine, with
digests) -> domain XML, written or defined -> boot check.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.inventory.model import Inventory
from imagebuilder.domain import Placement, domain_xml
from imagebuilder.fixups.linux import GuestError, fix_linux_guest, inspect_and_mount
from imagebuilder.fixups.network import configured_nic_names
from imagebuilder.profile import Overrides, ProfileError
from p2v import accel, appliance
from p2v.convert.bootcheck import verify_boot, watch_console
from p2v.convert.disks import SourceDisk, make_overlay
from p2v.convert.plan import Plan, PlanError, make_plan
from p2v.errors import InputError
from p2v.journal import Journal
from p2v.transfer import jobs
from p2v.units import format_size
from p2v.virt import LOCAL_URIS

SPACE_MARGIN = 1.1  # the copy needs the data, plus metadata and what trimming misses


@dataclass
class ConvertOptions:
    name: str
    output_dir: Path | None = None  # files only; else the domain is defined in libvirt
    uri: str = "qemu:///session"
    storage: Path | None = None  # where defined domains' disks go
    network: str = "user"
    overrides: Overrides = field(default_factory=Overrides)
    dry_run: bool = False
    verify_boot: bool = False
    start: bool = False
    boot_timeout: float = 600.0
    overwrite: bool = False


@dataclass
class ConvertResult:
    job_id: str
    plan: Plan
    fixups: list[dict[str, Any]] = field(default_factory=list)
    copies: list[dict[str, Any]] = field(default_factory=list)
    xml_path: str | None = None
    defined: bool = False
    boot: dict[str, Any] | None = None


class Step:
    """Records one step in the journal; a failure is recorded with its message."""

    def __init__(self, journal: Journal, job_id: str, say: Callable[[str], None]) -> None:
        self.journal, self.job_id, self.say = journal, job_id, say

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[dict[str, Any]]:
        self.say(f"{name} ...")
        self.journal.step_started(self.job_id, name)
        detail: dict[str, Any] = {}
        try:
            yield detail
        except BaseException as e:
            self.journal.step_ended(self.job_id, name, {**detail, "error": str(e)}, failed=True)
            raise
        self.journal.step_ended(self.job_id, name, detail)


def convert(
    inventory: Inventory,
    disks: list[SourceDisk],
    options: ConvertOptions,
    journal: Journal,
    say: Callable[[str], None],
    reporter: Any = None,
) -> ConvertResult:
    target_dir = options.output_dir or options.storage
    assert target_dir is not None
    targets = [target_dir / f"{options.name}-{d.name}.qcow2" for d in disks]
    _check_targets(targets, options)
    params = {
        "name": options.name,
        "disks": [d.to_json() for d in disks],
        "output_dir": str(options.output_dir) if options.output_dir else None,
        "uri": None if options.output_dir else options.uri,
    }
    job = journal.create("convert", params)
    step = Step(journal, job.id, say)
    work = target_dir / f".{options.name}.p2v-work"
    work.mkdir(parents=True, exist_ok=True)
    try:
        with step("inventory") as detail:
            detail.update(disks=[d.name for d in disks], nics=[n.mac for n in inventory.nics])
        overlays = [make_overlay(d, work / f"{d.name}.overlay.qcow2") for d in disks]
        g = appliance.new_handle()
        try:
            for overlay in overlays:
                g.add_drive_opts(str(overlay), format="qcow2", discard="besteffort")
            g.launch()
            with step("plan") as detail:
                plan = _plan(g, inventory, disks, options, target_dir)
                detail.update(plan.to_json())
                say(plan.describe())
            result = ConvertResult(job.id, plan)
            if options.dry_run:
                journal.finish(job.id, {"dry_run": True, "plan": plan.to_json()})
                return result
            with step("fix-ups") as detail:
                reports = fix_linux_guest(g, [d.name for d in disks], plan.nics)
                result.fixups = [r.to_json() for r in reports]
                for r in reports:
                    for change in r.changes:
                        say(f"  {r.name}: {change}")
                detail["fixups"] = result.fixups
            with step("free space") as detail:
                detail["trimmed"] = _trim(g)
            g.shutdown()
        finally:
            g.close()
        for disk, overlay, target, vdisk in zip(
            disks, overlays, targets, plan.profile.disks, strict=True
        ):
            with step(f"copy {disk.name}") as detail:
                request = jobs.CopyRequest(
                    source=str(overlay), target=str(target), input_format="qcow2",
                    output_format="qcow2", overwrite=options.overwrite,
                )  # fmt: skip
                copied = jobs.copy(request, journal, reporter)
                vdisk.file = str(target)
                result.copies.append(copied.to_json())
                detail.update(copy_job=copied.job_id, digest=copied.digest,
                              copied=copied.copied, size=copied.size)  # fmt: skip
                say(
                    f"  {disk.name}: {format_size(copied.copied)} of {format_size(copied.size)}"
                    f" moved, digest {copied.digest}"
                )
        with step("define") as detail:
            decision = accel.detect()
            console_log = target_dir / f"{options.name}.console.log"
            placement = Placement(decision.libvirt_domain_type, options.network, str(console_log))
            xml = domain_xml(plan.profile, placement)
            result.xml_path = str(target_dir / f"{options.name}.xml")
            Path(result.xml_path).write_text(xml)
            detail["xml"] = result.xml_path
            if options.output_dir is None:
                _define(options, xml)
                result.defined = True
                detail["uri"] = options.uri
        if options.verify_boot or options.start:
            with step("verify boot" if options.verify_boot else "start") as detail:
                result.boot = _boot(options, xml, console_log)
                detail.update(result.boot)
                if options.verify_boot and not result.boot["booted"]:
                    raise PlanError(f"the new guest did not boot: {result.boot['line']}")
    except BaseException as e:
        journal.fail(job.id, str(e))
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the overlays: the copies are made
    journal.finish(job.id, summary(result))
    return result


def _check_targets(targets: list[Path], options: ConvertOptions) -> None:
    existing = [str(t) for t in targets if t.exists()]
    if existing and not options.overwrite and not options.dry_run:
        raise InputError(f"{', '.join(existing)} already exist (--overwrite replaces them)")
    if options.output_dir is None and not options.overwrite and not options.dry_run:
        _refuse_existing_domain(options)
    booting = options.verify_boot or options.start or options.output_dir is None
    if booting and os.geteuid() == 0 and options.uri in LOCAL_URIS:
        # The privileged libvirt daemon runs QEMU as its own user: it must be able to
        # walk to the disks. Found now, not after the copy.
        for parent in targets[0].parent.resolve().parents:
            if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
                raise InputError(
                    f"libvirt's QEMU user cannot reach {targets[0].parent}: {parent} is not "
                    f"searchable by others (chmod o+x {parent}, or choose another directory)"
                )


def _refuse_existing_domain(options: ConvertOptions) -> None:
    import libvirt

    from p2v import virt

    conn = virt.connect(options.uri)
    try:
        conn.lookupByName(options.name)
    except libvirt.libvirtError:
        return  # no such domain: the name is free
    finally:
        conn.close()
    raise InputError(
        f"{options.uri} already has a domain {options.name!r} (--name another, or "
        "--overwrite to replace it)"
    )


def _plan(
    g: Any, inventory: Inventory, disks: list[SourceDisk], options: ConvertOptions, target: Path
) -> Plan:
    try:
        guest = inspect_and_mount(g)
        used = 0
        for mountpoint in guest.mountpoints:
            st = g.statvfs(mountpoint)
            used += (st["blocks"] - st["bfree"]) * st["frsize"]
        plan = make_plan(
            inventory, disks, guest, name=options.name, overrides=options.overrides,
            configured_nics=configured_nic_names(g), used_bytes=used,
        )  # fmt: skip
    except (GuestError, ProfileError) as e:
        raise PlanError(str(e)) from None
    free = shutil.disk_usage(target).free
    if not options.dry_run and free < used * SPACE_MARGIN:
        raise PlanError(
            f"{target} has {format_size(free)} free; the guest holds {format_size(used)} "
            "of data: make room or choose another --output-dir/--storage"
        )
    return plan


def _trim(g: Any) -> dict[str, str]:
    """Discard the free blocks of every mounted filesystem, in the overlays: they then
    read as zeros and are not copied."""
    done = {}
    for mountpoint in sorted(set(g.mountpoints().values())):
        try:
            g.fstrim(mountpoint)
            done[mountpoint] = "trimmed"
        except RuntimeError as e:
            done[mountpoint] = f"not trimmed: {str(e).splitlines()[0][:100]}"
    return done


def _define(options: ConvertOptions, xml: str) -> None:
    from p2v import virt

    conn = virt.connect(options.uri)
    try:
        conn.defineXML(xml)
    finally:
        conn.close()


def _boot(options: ConvertOptions, xml: str, console_log: Path) -> dict[str, Any]:
    """Files only: a transient boot of the XML. Defined: start the domain, and stop it
    again after the check unless --start asked to keep it running."""
    from p2v import virt

    conn = virt.connect(options.uri)
    try:
        if options.output_dir is not None:
            check = verify_boot(conn, xml, console_log, options.boot_timeout)
        else:
            console_log.unlink(missing_ok=True)
            domain = conn.lookupByName(options.name)
            domain.create()
            check = watch_console(console_log, options.boot_timeout, domain.isActive)
            if not options.start and domain.isActive():
                domain.destroy()
    finally:
        conn.close()
    return {"booted": check.booted, "line": check.line, "seconds": round(check.seconds, 1)}


def summary(result: ConvertResult) -> dict[str, Any]:
    return {
        "plan": result.plan.to_json(),
        "fixups": result.fixups,
        "copies": [
            {k: c[k] for k in ("job_id", "target", "size", "copied", "digest") if k in c}
            for c in result.copies
        ],
        "xml": result.xml_path,
        "defined": result.defined,
        "boot": result.boot,
    }

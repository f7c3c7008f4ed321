"""The conversion, step by step, each step recorded in the journal.

inventory -> plan (inspect the guest through overlays, refuse early) -> fix-ups and
free-space trim (in the overlays) -> copy each disk (the transfer engine, with
digests) -> domain XML, written or defined -> boot check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.inventory.model import Inventory
from imagebuilder.domain import Placement, domain_xml
from imagebuilder.fixups.linux import (
    GuestError,
    boot_disk_index,
    fix_linux_guest,
    inspect_and_mount,
)
from imagebuilder.fixups.network import configured_nic_names
from imagebuilder.profile import Overrides, ProfileError
from p2v import accel, appliance
from p2v.convert import sources
from p2v.convert.bootcheck import verify_boot, watch_console
from p2v.convert.disks import SourceDisk, make_overlay
from p2v.convert.plan import Plan, PlanError, check_space, guest_name, make_plan
from p2v.errors import InputError
from p2v.journal import Journal
from p2v.paths import state_dir
from p2v.transfer import DEFAULT_CHECKPOINT, jobs
from p2v.units import format_size
from p2v.virt import LOCAL_URIS


@dataclass
class ConvertOptions:
    name: str | None = None  # None: the guest's hostname
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
    bwlimit: int | None = None  # bytes/s of each disk's copy
    checkpoint: float = DEFAULT_CHECKPOINT  # seconds between durable checkpoints of a copy

    @property
    def target_dir(self) -> Path:
        target = self.output_dir or self.storage
        assert target is not None
        return target

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("output_dir", "storage"):
            data[key] = str(data[key]) if data[key] else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConvertOptions:
        fields = dict(data)
        for key in ("output_dir", "storage"):
            fields[key] = Path(fields[key]) if fields[key] else None
        fields["overrides"] = Overrides(**fields["overrides"])
        return cls(**fields)


@dataclass
class ConvertResult:
    job_id: str
    plan: Plan
    fixups: list[dict[str, Any]] = field(default_factory=list)
    copies: list[dict[str, Any]] = field(default_factory=list)
    xml_path: str | None = None
    defined: str | None = None  # the libvirt URI the domain was defined in
    boot: dict[str, Any] | None = None
    resumed: bool = False


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
    source: dict[str, Any],
    options: ConvertOptions,
    journal: Journal,
    say: Callable[[str], None],
    reporter: Any = None,
) -> ConvertResult:
    """Run a new conversion of `source` (see p2v.convert.sources)."""
    job = journal.create("convert", {"source": source, "options": options.to_json()})
    say(f"job {job.id} (`p2v history {job.id}` shows its steps)")
    return _run(job.id, source, options, journal, say, reporter, {})


def resume(
    job_id: str,
    journal: Journal,
    say: Callable[[str], None],
    reporter: Any = None,
    bwlimit: int | None = None,
) -> ConvertResult:
    """Finish an interrupted conversion: the steps done stay done (a guest already
    fixed in its overlays is not fixed again, a disk copied is not copied again, a
    disk half copied resumes from what its target durably holds)."""
    job = journal.resumable(job_id, "convert")
    if "source" not in job.params:
        raise InputError(f"job {job_id} was recorded by an older p2v and cannot be resumed")
    previous = {step["name"]: step for step in journal.steps(job_id)}
    journal.claim(job_id)
    say(f"resuming {job_id}")
    options = ConvertOptions.from_json(job.params["options"])
    if bwlimit is not None:
        options.bwlimit = bwlimit
    result = _run(job_id, job.params["source"], options, journal, say, reporter, previous)
    result.resumed = True
    return result


def _run(
    job_id: str,
    source: dict[str, Any],
    options: ConvertOptions,
    journal: Journal,
    say: Callable[[str], None],
    reporter: Any,
    previous: dict[str, dict[str, Any]],
) -> ConvertResult:
    step = Step(journal, job_id, say)
    done = {name: s["detail"] or {} for name, s in previous.items() if s["state"] == "done"}
    # The overlays hold the fixed guest until every disk is copied: kept when the job
    # dies after the fix-ups, so that --resume goes on from there.
    work = options.target_dir / f".p2v-{job_id}"
    relay = state_dir() / "relay" / job_id  # the same path on resume: overlays name it
    prepared = False
    try:
        _check_reachable(options)
        with sources.opened(source, relay) as (inventory, disks):
            with step("inventory") as detail:
                detail.update(
                    source=sources.describe(source),
                    disks=[d.to_json() for d in disks],
                    nics=[n.mac for n in inventory.nics],
                )
            overlays = [work / f"{d.name}.overlay.qcow2" for d in disks]
            if "free space" in done and all(o.exists() for o in overlays):
                plan = Plan.from_json(done["plan"])
                _check_same_disks(plan, disks)
                result = ConvertResult(job_id, plan, fixups=done["fix-ups"]["fixups"])
                say(f"the guest was fixed before the interruption; copying from {work}")
                _check_targets(plan, options, previous)
            else:
                result = _prepare(job_id, step, inventory, disks, overlays, options, say, previous)
                if options.dry_run:
                    journal.finish(job_id, {"dry_run": True, "plan": result.plan.to_json()})
                    return result
            prepared = True
            _copy(job_id, step, result, overlays, options, journal, reporter, say, previous)
        _define_and_boot(step, result, options)
        journal.finish(job_id, summary(result))
    except BaseException as e:
        journal.fail(job_id, str(e) or type(e).__name__)
        if prepared:
            say(f"the job can go on where it stopped: p2v convert --resume {job_id}")
        raise
    finally:
        shutil.rmtree(relay, ignore_errors=True)
        if not prepared or journal.get(job_id).state == "done":
            shutil.rmtree(work, ignore_errors=True)
    return result


def _check_same_disks(plan: Plan, disks: list[SourceDisk]) -> None:
    """A resumed job reads the source through the overlays it made: the disks must be
    those it started with."""
    then = [(d.name, d.size) for d in plan.disks]
    now = [(d.name, d.size) for d in disks]
    if then != now:
        raise InputError(
            f"the source's disks are now {now}, not {then} as when the job started: "
            "start a new conversion"
        )


def _targets(plan: Plan, options: ConvertOptions) -> list[Path]:
    return [options.target_dir / f"{plan.profile.name}-{d.name}.qcow2" for d in plan.disks]


def _prepare(
    job_id: str,
    step: Step,
    inventory: Inventory,
    disks: list[SourceDisk],
    overlays: list[Path],
    options: ConvertOptions,
    say: Callable[[str], None],
    previous: dict[str, dict[str, Any]],
) -> ConvertResult:
    """Inspect the guest through overlays, plan, refuse early, fix the guest and trim
    its free space, all in the overlays."""
    overlays[0].parent.mkdir(parents=True, exist_ok=True)
    for disk, overlay in zip(disks, overlays, strict=True):
        overlay.unlink(missing_ok=True)
        make_overlay(disk, overlay)
    g = appliance.new_handle()
    try:
        for overlay in overlays:
            g.add_drive_opts(str(overlay), format="qcow2", discard="besteffort")
        g.launch()
        with step("plan") as detail:
            plan = _plan(g, inventory, disks, options)
            detail.update(plan.to_json())
            say(plan.describe())
            if not options.dry_run:
                _check_targets(plan, options, previous)
        result = ConvertResult(job_id, plan)
        if options.dry_run:
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
    return result


def _copy(
    job_id: str,
    step: Step,
    result: ConvertResult,
    overlays: list[Path],
    options: ConvertOptions,
    journal: Journal,
    reporter: Any,
    say: Callable[[str], None],
    previous: dict[str, dict[str, Any]],
) -> None:
    plan = result.plan
    targets = _targets(plan, options)
    for disk, overlay, target, vdisk in zip(
        plan.disks, overlays, targets, plan.profile.disks, strict=True
    ):
        name = f"copy {disk.name}"
        vdisk.file = str(target)
        earlier = previous.get(name, {})
        if earlier.get("state") == "done" and target.exists():
            result.copies.append(earlier["detail"]["result"])
            say(f"  {disk.name}: copied before the interruption")
            continue
        with step(name) as detail:
            copied = _resume_copy(
                (earlier.get("detail") or {}).get("copy_job"), journal, reporter, options.bwlimit
            )
            if copied is None:
                request = jobs.CopyRequest(
                    source=str(overlay), target=str(target), input_format="qcow2",
                    output_format="qcow2", overwrite=options.overwrite or bool(earlier),
                    bwlimit=options.bwlimit, checkpoint=options.checkpoint,
                )  # fmt: skip

                def started(copy_job: str, name: str = name) -> None:
                    journal.step_detail(job_id, name, {"copy_job": copy_job})

                copied = jobs.copy(request, journal, reporter, on_job=started)
            result.copies.append(copied.to_json())
            detail.update(copy_job=copied.job_id, digest=copied.digest, result=copied.to_json())
            say(
                f"  {disk.name}: {format_size(copied.copied)} of {format_size(copied.size)}"
                f" moved, digest {copied.digest}"
            )


def _resume_copy(copy_job: str | None, journal: Journal, reporter: Any, bwlimit: int | None) -> Any:
    """The result of an earlier copy of this disk: finished, or resumed now; None when
    there is none to go on from."""
    if not copy_job:
        return None
    job = journal.get(copy_job)
    if job.state == "done" and job.result:
        return jobs.CopyResult(**job.result)
    try:
        return jobs.resume(copy_job, journal, reporter, bwlimit)
    except InputError:
        return None  # the target or the overlay changed: copy again


def _define_and_boot(step: Step, result: ConvertResult, options: ConvertOptions) -> None:
    name = result.plan.profile.name
    with step("define") as detail:
        decision = accel.detect()
        console_log = options.target_dir / f"{name}.console.log"
        placement = Placement(decision.libvirt_domain_type, options.network, str(console_log))
        xml = domain_xml(result.plan.profile, placement)
        result.xml_path = str(options.target_dir / f"{name}.xml")
        Path(result.xml_path).write_text(xml)
        detail["xml"] = result.xml_path
        if options.output_dir is None:
            _define(options, name, xml)
            result.defined = options.uri
            detail["uri"] = options.uri
    if options.verify_boot or options.start:
        with step("verify boot" if options.verify_boot else "start") as detail:
            result.boot = _boot(options, name, xml, console_log)
            detail.update(result.boot)
            if options.verify_boot and not result.boot["booted"]:
                raise PlanError(f"the new guest did not boot: {result.boot['line']}")


def _check_targets(
    plan: Plan, options: ConvertOptions, previous: dict[str, dict[str, Any]]
) -> None:
    """Refuse before copying what would be overwritten without --overwrite. What this
    job made itself before an interruption (copies, the domain) is its own to redo."""
    targets = _targets(plan, options)
    existing = [
        str(t) for t, d in zip(targets, plan.disks, strict=True)
        if t.exists() and f"copy {d.name}" not in previous
    ]  # fmt: skip
    if existing and not options.overwrite:
        raise InputError(f"{', '.join(existing)} already exist (--overwrite replaces them)")
    if options.output_dir is None and not options.overwrite and "define" not in previous:
        _refuse_existing_domain(options.uri, plan.profile.name)


def _check_reachable(options: ConvertOptions) -> None:
    """The privileged libvirt daemon runs QEMU as its own user: it must be able to walk
    to the disks. Found first, before anything is read."""
    booting = options.verify_boot or options.start or options.output_dir is None
    if not booting or os.geteuid() != 0 or options.uri not in LOCAL_URIS:
        return
    target = options.target_dir
    for parent in target.resolve().parents:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            raise InputError(
                f"libvirt's QEMU user cannot reach {target}: {parent} is not "
                f"searchable by others (chmod o+x {parent}, or choose another directory)"
            )


def _refuse_existing_domain(uri: str, name: str) -> None:
    import libvirt

    from p2v import virt

    conn = virt.connect(uri)
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError:
        return  # no such domain: the name is free
    finally:
        conn.close()
    raise InputError(
        f"{uri} already has a domain {name!r} (--name another, or --overwrite to replace it)"
    )


def _plan(g: Any, inventory: Inventory, disks: list[SourceDisk], options: ConvertOptions) -> Plan:
    try:
        guest = inspect_and_mount(g)
        used = 0
        for mountpoint in guest.mountpoints:
            st = g.statvfs(mountpoint)
            used += (st["blocks"] - st["bfree"]) * st["frsize"]
        plan = make_plan(
            inventory, disks, guest, name=options.name or guest_name(guest.hostname),
            overrides=options.overrides,
            configured_nics=configured_nic_names(g), used_bytes=used,
            boot_disk=boot_disk_index(g, guest),
        )  # fmt: skip
    except (GuestError, ProfileError) as e:
        raise PlanError(str(e)) from None
    if not options.dry_run:
        target = options.target_dir
        check_space(target, shutil.disk_usage(target).free, used)
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


def _define(options: ConvertOptions, name: str, xml: str) -> None:
    """Define the domain; with --overwrite (or on resume) an older definition of the
    same name is replaced, unless it is running."""
    import libvirt

    from p2v import virt

    conn = virt.connect(options.uri)
    try:
        try:
            old = conn.lookupByName(name)
        except libvirt.libvirtError:
            old = None
        if old is not None:
            if old.isActive():
                raise InputError(f"{options.uri}: the domain {name!r} is running; stop it first")
            old.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        conn.defineXML(xml)
    finally:
        conn.close()


def _boot(options: ConvertOptions, name: str, xml: str, console_log: Path) -> dict[str, Any]:
    """Files only: a transient boot of the XML. Defined: start the domain, and stop it
    again after the check unless --start asked to keep it running."""
    from p2v import virt

    conn = virt.connect(options.uri)
    try:
        if options.output_dir is not None:
            check = verify_boot(conn, xml, console_log, options.boot_timeout)
        else:
            console_log.unlink(missing_ok=True)
            domain = conn.lookupByName(name)
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

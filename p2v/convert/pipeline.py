"""The conversion, step by step, each step recorded in the journal.

inventory -> plan (inspect the guest through overlays, refuse early) -> fix-ups and
free-space trim (in the overlays) -> copy each disk (the transfer engine, with
digests) -> domain XML, written or defined -> boot check.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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
from p2v.convert import DEFAULT_BOOT_TIMEOUT, checks, sources, targets
from p2v.convert.bootcheck import BootCheck, verify_boot, watch, watch_console
from p2v.convert.disks import SourceDisk, make_overlay, mark_zeros
from p2v.convert.plan import Plan, guest_name, make_plan
from p2v.destination import Destination, is_remote
from p2v.errors import (
    AgentError,
    BootCheckError,
    ComponentError,
    InputError,
    P2VError,
    PlanError,
    system_error,
)
from p2v.host import virt
from p2v.host.virt.domainxml import DomainXml
from p2v.jobs.journal import Journal, vm_resource
from p2v.jobs.steps import Step
from p2v.paths import state_dir
from p2v.transfer import DEFAULT_CHECKPOINT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, jobs
from p2v.units import format_size

_T = TypeVar("_T")


@dataclass
class ConvertOptions:
    name: str | None = None  # None: the guest's hostname
    output_dir: Path | None = None  # files only; else the domain is defined in libvirt
    # The host the domain is defined in (or the boot check runs on), its disks' storage.
    destination: Destination = field(default_factory=Destination)
    overrides: Overrides = field(default_factory=Overrides)
    dry_run: bool = False
    verify_boot: bool = False
    start: bool = False
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT
    bwlimit: int | None = None  # bytes/s of each disk's copy
    checkpoint: float = DEFAULT_CHECKPOINT  # seconds between durable checkpoints of a copy
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT  # each stage of reaching a server
    io_timeout: float = DEFAULT_IO_TIMEOUT  # seconds without a reply during a copy

    @property
    def uri(self) -> str:
        return self.destination.uri

    @property
    def overwrite(self) -> bool:
        return self.destination.replace

    @property
    def in_pool(self) -> bool:
        """The disks go into a storage pool (of this host or another)."""
        return self.output_dir is None and self.destination.pool is not None

    @property
    def target_dir(self) -> Path:
        """This host's directory for what the job writes here: the disks, unless they go
        into a pool; the domain XML; the overlays while the job runs."""
        if self.in_pool:
            return state_dir() / "guests"
        target = self.output_dir or self.destination.storage
        assert target is not None
        return target

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["output_dir"] = str(self.output_dir) if self.output_dir else None
        data["destination"] = self.destination.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConvertOptions:
        fields = dict(data)
        fields["output_dir"] = Path(fields["output_dir"]) if fields["output_dir"] else None
        fields["overrides"] = Overrides(**fields["overrides"])
        if "destination" in fields:
            fields["destination"] = Destination.from_json(fields["destination"])
        else:  # recorded before destinations: the same fields, flat
            storage = fields.pop("storage")
            fields["destination"] = Destination(
                fields.pop("uri"), None, Path(storage) if storage else None,
                fields.pop("network"), fields.pop("overwrite"),
            )  # fmt: skip
        return cls(**fields)


# What a conversion that stops has left, by the step it stopped in.
_PREPARING, _COPYING, _DEFINING = "preparing", "copying", "defining"


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


def convert(
    source: dict[str, Any],
    options: ConvertOptions,
    journal: Journal,
    say: Callable[[str], None],
    reporter: Any = None,
) -> ConvertResult:
    """Run a new conversion of `source` (see p2v.convert.sources). What can be refused
    without inspecting the guest is refused before the job is recorded."""
    _preflight(source, options)
    job = journal.create("convert", {"source": source, "options": options.to_json()})
    say(f"job {job.id} (`p2v history {job.id}` shows its steps)")
    return _run(job.id, source, options, journal, say, reporter, {})


def _preflight(source: dict[str, Any], options: ConvertOptions) -> None:
    checks.check_values(options)
    names = sources.disk_names(source, options.connect_timeout)
    with checks.target_directory(options.target_dir, keep=not options.dry_run):
        checks.qemu_can_reach(options)
        checks.libvirt_answers(options)
        if options.in_pool:
            targets.pool_answers(options.destination, options.connect_timeout)
        if options.name:
            checks.free_targets(options.name, _target_paths(options.name, names, options), options)


def resume(
    job_id: str,
    journal: Journal,
    say: Callable[[str], None],
    reporter: Any = None,
    changes: dict[str, Any] | None = None,
) -> ConvertResult:
    """Finish an interrupted conversion: the steps done stay done (a guest already
    fixed in its overlays is not fixed again, a disk copied is not copied again, a
    disk half copied resumes from what its target durably holds; once every disk is
    copied the source is not read again). `changes` sets p2v.convert.RESUME_CHANGES anew."""
    job = journal.resumable(job_id, "convert")
    if "source" not in job.params:
        raise InputError(f"job {job_id} was recorded by an older p2v and cannot be resumed")
    previous = {step["name"]: step for step in journal.steps(job_id)}
    options = ConvertOptions.from_json(job.params["options"])
    options = dataclasses.replace(options, **(changes or {}))
    journal.claim(job_id)
    say(f"resuming {job_id}")
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
    # dies after the fix-ups, so that --resume goes on from there. A dry run keeps
    # nothing, and makes nothing beside the targets.
    work = (state_dir() / "work" if options.dry_run else options.target_dir) / f".p2v-{job_id}"
    relay = state_dir() / "relay" / job_id  # the same path on resume: overlays name it
    # Overlays an earlier run fixed are kept even when this one fails before it
    # reaches them: made again, they would not match what was copied from them.
    stage, prepared = _PREPARING, "free space" in done
    result = _copied_before(job_id, done, options)
    try:
        checks.qemu_can_reach(options)
        if result is not None:
            say("every disk was copied before the interruption; the source is not read again")
        else:
            with sources.opened(source, relay, options.connect_timeout) as opened:
                try:
                    result, fresh = _inventory_and_fixups(
                        job_id, step, opened, work, options, say, previous, done
                    )
                    if options.dry_run:
                        journal.finish(job_id, {"dry_run": True, "plan": result.plan.to_json()})
                        return result
                    stage, prepared = _COPYING, True
                    overlays = _overlays(work, result.plan.disks)
                    _copy(job_id, step, result, overlays, opened, options, journal, reporter,
                          say, previous, fresh)  # fmt: skip
                except Exception as e:
                    if lost := opened.lost():
                        raise AgentError(lost) from e
                    raise
        stage = _DEFINING
        _define_and_boot(step, result, options, job_id)
        journal.finish(job_id, summary(result))
    except BaseException as e:
        journal.fail(job_id, str(e) or type(e).__name__)
        raise _explained(e, stage, job_id, result, options, say) from None
    finally:
        shutil.rmtree(relay, ignore_errors=True)
        if not prepared or journal.get(job_id).state == "done":
            shutil.rmtree(work, ignore_errors=True)
    return result


def _explained(
    error: BaseException,
    stage: str,
    job_id: str,
    result: ConvertResult | None,
    options: ConvertOptions,
    say: Callable[[str], None],
) -> BaseException:
    """The error a conversion ends with, saying what exists and how to go on."""
    go_on = f"p2v convert --resume {job_id}"
    if isinstance(error, KeyboardInterrupt):
        say(f"interrupted; the job can go on where it stopped: {go_on}")
        return error
    if isinstance(error, BootCheckError | PlanError | InputError):
        return error  # says itself what exists; a resume would not change it
    if isinstance(error, OSError):
        error = system_error(error)
    elif not isinstance(error, P2VError):
        return error  # a bug of ours: its traceback is what helps
    if stage not in (_PREPARING, _COPYING) and result is not None:
        files = ", ".join(str(t) for t in _targets(result.plan, options))
        say(f"the disks are copied: {files}")
    error.resume = go_on
    return error


def _copied_before(
    job_id: str, done: dict[str, Any], options: ConvertOptions
) -> ConvertResult | None:
    """What an earlier run copied, when it copied every disk and the copies are still
    there: then the source need not be opened again."""
    if "plan" not in done or "fix-ups" not in done:
        return None
    plan = Plan.from_json(done["plan"])
    disks = _targets(plan, options)
    steps = [done.get(f"copy {d.name}") for d in plan.disks]
    if not all(steps) or not all(targets.exists(t, options.connect_timeout) for t in disks):
        return None
    result = ConvertResult(job_id, plan, fixups=done["fix-ups"]["fixups"])
    for step, target, vdisk in zip(steps, disks, plan.profile.disks, strict=True):
        assert step is not None
        result.copies.append(step["result"])
        vdisk.file = target
    return result


def _overlays(work: Path, disks: list[SourceDisk]) -> list[Path]:
    return [work / f"{d.name}.overlay.qcow2" for d in disks]


def _inventory_and_fixups(
    job_id: str,
    step: Step,
    opened: sources.Opened,
    work: Path,
    options: ConvertOptions,
    say: Callable[[str], None],
    previous: dict[str, dict[str, Any]],
    done: dict[str, Any],
) -> tuple[ConvertResult, bool]:
    """The inventory step, then the plan and the fix-ups in the overlays, unless an
    earlier run of the job made them; True when this run made the overlays."""
    inventory, disks = opened.inventory, opened.disks
    with step("inventory") as detail:
        detail.update(
            source=opened.description,
            disks=[d.to_json() for d in disks],
            nics=[n.mac for n in inventory.nics],
        )
    overlays = _overlays(work, disks)
    if "free space" in done and all(o.exists() for o in overlays):
        plan = Plan.from_json(done["plan"])
        _check_same_disks(plan, disks)
        say(f"the guest was fixed before the interruption; copying from {work}")
        _check_targets(plan, options, previous)
        return ConvertResult(job_id, plan, fixups=done["fix-ups"]["fixups"]), False
    return _prepare(job_id, step, inventory, disks, overlays, options, say, previous), True


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


def _targets(plan: Plan, options: ConvertOptions) -> list[str]:
    return _target_paths(plan.profile.name, [d.name for d in plan.disks], options)


def _target_paths(name: str, disks: list[str], options: ConvertOptions) -> list[str]:
    """Each disk's target: a volume spec, or an image file of the target directory."""
    if options.in_pool:
        return [options.destination.disk_target(name, disk) for disk in disks]
    return [str(options.target_dir / f"{name}-{disk}.qcow2") for disk in disks]


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
        _appliance(g.launch, "starting the libguestfs appliance")
        with step("plan") as detail:
            plan = _plan(g, inventory, disks, options)
            detail.update(plan.to_json())
            say(plan.describe())
            _check_targets(plan, options, previous)
        result = ConvertResult(job_id, plan)
        if options.dry_run:
            return result
        with step("fix-ups") as detail:
            reports = _appliance(
                lambda: fix_linux_guest(g, [d.name for d in disks], plan.nics), "fixing the guest"
            )
            result.fixups = [r.to_json() for r in reports]
            for r in reports:
                for change in r.changes:
                    say(f"  {r.name}: {change}")
            detail["fixups"] = result.fixups
        with step("free space") as detail:
            detail["trimmed"] = _trim(g)
        _appliance(g.shutdown, "writing the fixed guest")
    finally:
        g.close()
    return result


def _appliance(call: Callable[[], _T], what: str) -> _T:
    """A libguestfs call; its failures (RuntimeError) become ComponentError."""
    try:
        return call()
    except RuntimeError as e:
        raise ComponentError(f"libguestfs, {what}: {str(e).splitlines()[0]}") from e


def _copy(
    job_id: str,
    step: Step,
    result: ConvertResult,
    overlays: list[Path],
    opened: sources.Opened,
    options: ConvertOptions,
    journal: Journal,
    reporter: Any,
    say: Callable[[str], None],
    previous: dict[str, dict[str, Any]],
    fresh: bool,
) -> None:
    """Copy each disk from its overlay. `fresh`: the overlays were made by this run,
    so nothing an earlier run copied from other ones is kept (its targets, this
    job's own, are replaced)."""
    plan = result.plan
    for disk, overlay, target, vdisk in zip(
        plan.disks, overlays, _targets(plan, options), plan.profile.disks, strict=True
    ):
        name = f"copy {disk.name}"
        vdisk.file = target
        earlier = {} if fresh else previous.get(name, {})
        if earlier.get("state") == "done" and targets.exists(target, options.connect_timeout):
            result.copies.append(earlier["detail"]["result"])
            say(f"  {disk.name}: copied before the interruption")
            continue
        with step(name) as detail:

            def remember(copy_job: str, name: str = name, detail: dict[str, Any] = detail) -> None:
                # In the step's record even when it fails: --resume goes on with this
                # copy instead of starting it again.
                detail["copy_job"] = copy_job
                journal.step_detail(job_id, name, detail)

            before = (earlier.get("detail") or {}).get("copy_job")
            if before:
                remember(before)
            detail.update(_known_zeros(opened, disk.name, overlay, say))
            copied = jobs.go_on(
                before, journal, reporter, options.bwlimit,
                connect_timeout=options.connect_timeout, io_timeout=options.io_timeout,
            )  # fmt: skip
            if copied is None:
                request = jobs.CopyRequest(
                    source=str(overlay), target=target, input_format="qcow2",
                    output_format=targets.image_format(target),
                    overwrite=options.overwrite or name in previous,
                    bwlimit=options.bwlimit, checkpoint=options.checkpoint,
                    connect_timeout=options.connect_timeout, io_timeout=options.io_timeout,
                )  # fmt: skip
                copied = jobs.copy(request, journal, reporter, on_job=remember, parent=job_id)
            result.copies.append(copied.to_json())
            detail.update(copy_job=copied.job_id, digest=copied.digest, result=copied.to_json())
            say(
                f"  {disk.name}: {format_size(copied.copied)} of {format_size(copied.size)}"
                f" moved, digest {copied.digest}"
            )


def _known_zeros(
    opened: sources.Opened, disk: str, overlay: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """Mark in the overlay the zeros the source found on the disk: not copied."""
    found = opened.zero_map(disk)
    if found is None:
        return {}
    try:
        marked = mark_zeros(overlay, found.runs)
    except ComponentError as e:  # a saving only: the disk is read in full instead
        say(f"  {disk}: the zeros the source found are read anyway: {e}")
        return {"zeros_found": found.zero_bytes, "zeros_marked": 0}
    share = 100 * found.scanned / max(found.size, 1)
    say(
        f"  {disk}: {format_size(found.zero_bytes)} of zeros found by the source "
        f"(it has looked at {share:.0f}% of the disk), not copied"
    )
    return {"zeros_found": found.zero_bytes, "zeros_marked": marked, "scanned": found.scanned}


def _define_and_boot(
    step: Step, result: ConvertResult, options: ConvertOptions, job_id: str
) -> None:
    name = result.plan.profile.name
    with step("define") as detail:
        if options.output_dir is None:  # one job at a time on a domain; free when it ends
            step.journal.lock(vm_resource(options.uri, name), job_id)
        console_log = options.target_dir / f"{name}.console.log"
        # A pool's host may be another: QEMU there cannot write a file of this host,
        # so the boot check reads the console through libvirt and keeps it here.
        placement = Placement(
            _domain_type(options),
            options.destination.network,
            None if options.in_pool else str(console_log),
        )
        xml = _with_volumes(domain_xml(result.plan.profile, placement), options)
        result.xml_path = str(options.target_dir / f"{name}.xml")
        Path(result.xml_path).parent.mkdir(parents=True, exist_ok=True)
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
                raise _did_not_boot(result, options, console_log, job_id)


def _domain_type(options: ConvertOptions) -> str:
    """kvm or qemu: the probe's choice on this host; on another, what it offers (the
    probe cannot run there), unless P2V_ACCEL names one."""
    chosen = accel.forced()
    if chosen is None and is_remote(options.uri):
        with virt.connection(options.uri, options.connect_timeout) as conn:
            return "kvm" if "kvm" in virt.domain_types(conn) else "qemu"
    return (chosen or accel.detect()).libvirt_domain_type


def _with_volumes(xml: str, options: ConvertOptions) -> str:
    """The domain's disks that are volumes named by their paths on their host, raw."""
    if not options.in_pool:
        return xml
    domain = DomainXml.parse(xml)
    for disk in domain.writable_disks():
        disk.source = targets.location(disk.source, options.connect_timeout)
        disk.format = "raw"
    return domain.to_xml()


def _did_not_boot(
    result: ConvertResult, options: ConvertOptions, console_log: Path, job_id: str
) -> BootCheckError:
    assert result.boot is not None
    files = ", ".join(str(t) for t in _targets(result.plan, options))
    where = (
        f"the domain {result.plan.profile.name!r} is defined in {result.defined}"
        if result.defined
        else f"its domain XML is {result.xml_path}"
    )
    return BootCheckError(
        f"the guest was converted but did not boot within {options.boot_timeout:g} s: "
        f"{result.boot['line']}. Its disks are {files}; {where}; its console log is "
        f"{console_log}. To check again: p2v convert --resume {job_id} "
        "(--boot-timeout SECONDS to wait longer)"
    )


def _check_targets(
    plan: Plan, options: ConvertOptions, previous: dict[str, dict[str, Any]]
) -> None:
    """Refuse before copying what would be overwritten without --overwrite. What this
    job made itself before an interruption (copies, the domain) is its own to redo."""
    targets = _targets(plan, options)
    own = [t for t, d in zip(targets, plan.disks, strict=True) if f"copy {d.name}" in previous]
    checks.free_targets(plan.profile.name, targets, options, own, own_domain="define" in previous)


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
    except RuntimeError as e:
        raise ComponentError(f"libguestfs, inspecting the guest: {str(e).splitlines()[0]}") from e
    pool = options.destination if options.in_pool else None
    targets.check_room(pool, options.target_dir, used, options.connect_timeout)
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
    same name is replaced, with its NVRAM, unless it is running."""
    with virt.connection(options.uri, options.connect_timeout) as conn:
        virt.define_or_replace(conn, name, xml, replace=True)


def _boot(options: ConvertOptions, name: str, xml: str, console_log: Path) -> dict[str, Any]:
    """Files only: a transient boot of the XML. Defined: start the domain, and stop it
    again after the check unless --start asked to keep it running."""
    with virt.connection(options.uri, options.connect_timeout) as conn:
        if options.output_dir is not None:
            check = verify_boot(conn, xml, console_log, options.boot_timeout)
        else:
            console_log.unlink(missing_ok=True)
            domain = virt.lookup(conn, name)
            if domain is None:
                raise ComponentError(f"{options.uri}: the domain {name!r} has gone")
            if options.in_pool:
                check = _boot_watching_stream(conn, domain, console_log, options.boot_timeout)
            else:
                virt.start(domain)
                check = watch_console(console_log, options.boot_timeout, domain.isActive)
            if not options.start:
                virt.destroy(domain)
    return {"booted": check.booted, "line": check.line, "seconds": round(check.seconds, 1)}


def _boot_watching_stream(conn: Any, domain: Any, console_log: Path, timeout: float) -> BootCheck:
    """Start the domain with its console read through libvirt (opened before its CPUs
    run, so nothing is missed); what the console printed is kept in `console_log`."""
    virt.start(domain, paused=True)
    with virt.Console(conn, domain) as console:
        virt.resume(domain)
        try:
            return watch(console.read, timeout, domain.isActive)
        finally:
            console_log.write_text(console.text)


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

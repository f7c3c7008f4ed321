"""The conversion, step by step, each step recorded in the journal.

inventory -> plan (inspect the guest through overlays, refuse early) -> fix-ups and
free-space trim (in the overlays) -> copy each disk (the transfer engine, with
digests) -> domain XML, written or defined -> boot check.
"""

from __future__ import annotations

import contextlib
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
from p2v.convert.disks import SourceDisk, make_overlay, mark_zeros
from p2v.convert.plan import Plan, guest_name, make_plan
from p2v.destination import Destination, is_remote
from p2v.errors import (
    AgentError,
    BootCheckError,
    BusyError,
    ComponentError,
    InputError,
    P2VError,
    PlanError,
    system_error,
)
from p2v.host import virt
from p2v.host.bootcheck import BootCheck, verify_boot, watch, watch_console
from p2v.host.virt.domainxml import DomainXml
from p2v.jobs.journal import Journal, vm_lock, vm_name_lock
from p2v.jobs.runner import Kind, Run, Step
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


def _describe(params: dict[str, Any], result: dict[str, Any]) -> str:
    name = result.get("plan", {}).get("profile", {}).get("name")
    name = name or params["options"].get("name") or "?"
    return f"{name} from {sources.describe(params['source'])}"


def _outcome(result: dict[str, Any]) -> str | None:
    if result.get("dry_run"):
        return "planned (dry run)"
    if result.get("defined"):
        return f"defined in {result['defined']}"
    return f"written: {result['xml']}" if result.get("xml") else None


KIND = Kind("convert", _describe, _outcome)


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
    run = Run.start(KIND, {"source": source, "options": options.to_json()}, journal, say)
    say(f"job {run.job_id} (`p2v history {run.job_id}` shows its steps)")
    return _Conversion(run, source, options, reporter).execute()


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
    job = journal.resumable(job_id, KIND.name)
    if "source" not in job.params:
        raise InputError(f"job {job_id} was recorded by an older p2v and cannot be resumed")
    options = ConvertOptions.from_json(job.params["options"])
    options = dataclasses.replace(options, **(changes or {}))
    run = Run.resume(KIND, job_id, journal, say)
    say(f"resuming {job_id}")
    result = _Conversion(run, job.params["source"], options, reporter).execute()
    result.resumed = True
    return result


class _Conversion:
    """One run of a conversion job: its steps, in the order of the data flow."""

    def __init__(
        self, run: Run, source: dict[str, Any], options: ConvertOptions, reporter: Any
    ) -> None:
        self.run, self.source, self.options, self.reporter = run, source, options, reporter
        self.say = run.say
        # The overlays hold the fixed guest until every disk is copied: kept when the
        # job dies after the fix-ups, so that --resume goes on from there. A dry run
        # keeps nothing, and makes nothing beside the targets.
        base = state_dir() / "work" if options.dry_run else options.target_dir
        self.work = base / f".p2v-{run.job_id}"
        self.relay = state_dir() / "relay" / run.job_id  # the same on resume: overlays name it
        self.stage = _PREPARING
        # Overlays an earlier run fixed are kept even when this one fails before it
        # reaches them: made again, they would not match what was copied from them.
        self.prepared = self._done_before("free space") is not None
        self.result: ConvertResult | None = None
        self.held: Any = None  # the connection to the host whose domain is locked

    def execute(self) -> ConvertResult:
        try:
            self.run.execute(self._drive)
        except BaseException as e:
            raise _explained(e, self.stage, self.run.job_id, self.result, self.options,
                             self.say) from None  # fmt: skip
        finally:
            if self.held is not None:
                with contextlib.suppress(Exception):  # a host that went away
                    self.held.close()
            shutil.rmtree(self.relay, ignore_errors=True)
            if not self.prepared or self.run.journal.get(self.run.job_id).state == "done":
                shutil.rmtree(self.work, ignore_errors=True)
        assert self.result is not None
        return self.result

    def _drive(self) -> dict[str, Any]:
        checks.qemu_can_reach(self.options)
        self.result = self._copied_before()
        if self.result is not None:
            self.say("every disk was copied before the interruption; the source is not read again")
            self._lock(self.result.plan)
        else:
            with sources.opened(self.source, self.relay, self.options.connect_timeout) as opened:
                try:
                    self.result = self._inventory_and_fixups(opened)
                    if self.options.dry_run:
                        return {"dry_run": True, "plan": self.result.plan.to_json()}
                    self._lock(self.result.plan)
                    self.stage, self.prepared = _COPYING, True
                    self._copy(opened)
                except Exception as e:
                    if lost := opened.lost():
                        raise AgentError(lost) from e
                    raise
        self.stage = _DEFINING
        self._define_and_boot(self.result)
        return summary(self.result)

    def _done_before(self, name: str) -> dict[str, Any] | None:
        before = self.run.previous.get(name)
        return (before["detail"] or {}) if before and before["state"] == "done" else None

    def _lock(self, plan: Plan) -> None:
        """The domain this job defines, locked before its disks are copied: by its
        UUID and by its name on the host (the name decides what a define replaces)."""
        if self.options.output_dir is not None:
            return  # files only: each copy locks its target file
        name, uri = plan.profile.name, self.options.uri
        # Held until the job ends: a daemon that idles out may come back with another
        # host UUID (where it finds no SMBIOS one), and the lock would name no host.
        self.held = virt.connect(uri, self.options.connect_timeout)
        host = virt.identity(self.held).uuid
        label = f"{name} on {uri}"
        self.run.lock(vm_name_lock(host, name, label))
        if plan.uuid:
            self.run.lock(vm_lock(host, plan.uuid, label))

    def _copied_before(self) -> ConvertResult | None:
        """What an earlier run copied, when it copied every disk and the copies are
        still there: then the source need not be opened again."""
        planned, fixed = self._done_before("plan"), self._done_before("fix-ups")
        if planned is None or fixed is None:
            return None
        plan = Plan.from_json(planned)
        steps = [self._copy_step(plan, i, None) for i in range(len(plan.disks))]
        if any(self.run.pending(step) for step in steps):
            return None
        result = ConvertResult(self.run.job_id, plan, fixups=fixed["fixups"])
        for step, target, vdisk in zip(steps, _targets(plan, self.options), plan.profile.disks,
                                       strict=True):  # fmt: skip
            result.copies.append(self.run.earlier(step.name)["result"])
            vdisk.file = target
        return result

    def _inventory_and_fixups(self, opened: sources.Opened) -> ConvertResult:
        """The inventory step, then the plan and the fix-ups in the overlays, unless an
        earlier run of the job made them."""
        run, disks = self.run, opened.disks
        run(Step("inventory", lambda: {
            "source": opened.description, "disks": [d.to_json() for d in disks],
            "nics": [n.mac for n in opened.inventory.nics],
        }, again=True))  # fmt: skip
        overlays = _overlays(self.work, disks)
        kept = self._done_before("free space") is not None and all(o.exists() for o in overlays)
        g: Any = None
        found: list[Plan] = []

        def plan() -> dict[str, Any]:
            found.append(_plan(g, opened.inventory, disks, self.options))
            self.say(found[0].describe())
            _check_targets(found[0], self.options, run.previous)
            return found[0].to_json()

        def fixups() -> dict[str, Any]:
            reports = _appliance(
                lambda: fix_linux_guest(g, [d.name for d in disks], found[0].nics),
                "fixing the guest",
            )
            for r in reports:
                for change in r.changes:
                    self.say(f"  {r.name}: {change}")
            return {"fixups": [r.to_json() for r in reports]}

        def trim() -> dict[str, Any]:
            trimmed = _trim(g)
            _appliance(g.shutdown, "writing the fixed guest")
            return {"trimmed": trimmed}

        steps = (
            Step("plan", plan, still=lambda _: kept),
            Step("fix-ups", fixups, needs=("plan",)),
            Step("free space", trim, needs=("fix-ups",)),
        )
        if not run.pending(steps[0]):
            planned = Plan.from_json(run(steps[0]))
            _check_same_disks(planned, disks)
            self.say(f"the guest was fixed before the interruption; copying from {self.work}")
            _check_targets(planned, self.options, run.previous)
            return ConvertResult(run.job_id, planned, fixups=run(steps[1])["fixups"])
        g = _launch(disks, overlays)
        try:
            run(steps[0])
            result = ConvertResult(run.job_id, found[0])
            if not self.options.dry_run:
                result.fixups = run(steps[1])["fixups"]
                run(steps[2])
        finally:
            g.close()
        return result

    def _copy_step(self, plan: Plan, index: int, opened: sources.Opened | None) -> Step:
        """Step `copy DISK`: the disk's overlay copied to its target by a child copy
        job; done before and its target still there, it is not copied again. Made
        again after the fix-ups (new overlays), its target is replaced."""
        disk, target = plan.disks[index], _targets(plan, self.options)[index]
        name = f"copy {disk.name}"

        def copy() -> dict[str, Any]:
            assert opened is not None
            run, options = self.run, self.options
            overlay = _overlays(self.work, plan.disks)[index]
            zeros = _known_zeros(opened, disk.name, overlay, self.say)
            copied = jobs.go_on(
                run.child(), run.journal, self.reporter, options.bwlimit,
                connect_timeout=options.connect_timeout, io_timeout=options.io_timeout,
            )  # fmt: skip
            if copied is None:
                request = jobs.CopyRequest(
                    source=str(overlay), target=target, input_format="qcow2",
                    output_format=targets.image_format(target),
                    overwrite=options.overwrite or name in run.previous,
                    bwlimit=options.bwlimit, checkpoint=options.checkpoint,
                    connect_timeout=options.connect_timeout, io_timeout=options.io_timeout,
                )  # fmt: skip
                copied = jobs.copy(request, run.journal, self.reporter, on_job=run.adopt,
                                   parent=run.job_id)  # fmt: skip
            self.say(
                f"  {disk.name}: {format_size(copied.copied)} of {format_size(copied.size)}"
                f" moved, digest {copied.digest}"
            )
            return {**zeros, "child": copied.job_id, "digest": copied.digest,
                    "result": copied.to_json()}  # fmt: skip

        timeout = self.options.connect_timeout
        return Step(name, copy, needs=("free space",),
                    still=lambda _: targets.exists(target, timeout))  # fmt: skip

    def _copy(self, opened: sources.Opened) -> None:
        """Copy each disk from its overlay."""
        assert self.result is not None
        plan = self.result.plan
        for index, (disk, target, vdisk) in enumerate(
            zip(plan.disks, _targets(plan, self.options), plan.profile.disks, strict=True)
        ):
            vdisk.file = target
            step = self._copy_step(plan, index, opened)
            if not self.run.pending(step):
                self.say(f"  {disk.name}: copied before the interruption")
            self.result.copies.append(self.run(step)["result"])

    def _define_and_boot(self, result: ConvertResult) -> None:
        options, name = self.options, result.plan.profile.name
        console_log = options.target_dir / f"{name}.console.log"
        xml: list[str] = []

        def define() -> dict[str, Any]:
            # A pool's host may be another: QEMU there cannot write a file of this host,
            # so the boot check reads the console through libvirt and keeps it here.
            placement = Placement(
                _domain_type(options),
                options.destination.network,
                None if options.in_pool else str(console_log),
            )
            xml.append(_with_volumes(domain_xml(result.plan.profile, placement), options,
                                     result.plan.uuid))  # fmt: skip
            result.xml_path = str(options.target_dir / f"{name}.xml")
            Path(result.xml_path).parent.mkdir(parents=True, exist_ok=True)
            Path(result.xml_path).write_text(xml[0])
            if options.output_dir is not None:
                return {"xml": result.xml_path}
            _define(options, name, xml[0])
            result.defined = options.uri
            return {"xml": result.xml_path, "uri": options.uri}

        def boot() -> dict[str, Any]:
            result.boot = _boot(options, name, xml[0], console_log)
            if options.verify_boot and not result.boot["booted"]:
                self.run.remember(**result.boot)
                raise _did_not_boot(result, options, console_log, self.run.job_id)
            return result.boot

        self.run(Step("define", define, again=True))
        if options.verify_boot or options.start:
            self.run(Step("verify boot" if options.verify_boot else "start", boot, again=True))


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
    if isinstance(error, BootCheckError | PlanError | InputError | BusyError):
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


def _overlays(work: Path, disks: list[SourceDisk]) -> list[Path]:
    return [work / f"{d.name}.overlay.qcow2" for d in disks]


def _launch(disks: list[SourceDisk], overlays: list[Path]) -> Any:
    """A libguestfs appliance on new overlays of the source disks: what the plan
    inspects and the fix-ups change, never the source."""
    overlays[0].parent.mkdir(parents=True, exist_ok=True)
    for disk, overlay in zip(disks, overlays, strict=True):
        overlay.unlink(missing_ok=True)
        make_overlay(disk, overlay)
    g = appliance.new_handle()
    try:
        for overlay in overlays:
            g.add_drive_opts(str(overlay), format="qcow2", discard="besteffort")
        _appliance(g.launch, "starting the libguestfs appliance")
    except BaseException:
        g.close()
        raise
    return g


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


def _appliance(call: Callable[[], _T], what: str) -> _T:
    """A libguestfs call; its failures (RuntimeError) become ComponentError."""
    try:
        return call()
    except RuntimeError as e:
        raise ComponentError(f"libguestfs, {what}: {str(e).splitlines()[0]}") from e


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


def _domain_type(options: ConvertOptions) -> str:
    """kvm or qemu: the probe's choice on this host; on another, what it offers (the
    probe cannot run there), unless P2V_ACCEL names one."""
    chosen = accel.forced()
    if chosen is None and is_remote(options.uri):
        with virt.connection(options.uri, options.connect_timeout) as conn:
            return "kvm" if "kvm" in virt.domain_types(conn) else "qemu"
    return (chosen or accel.detect()).libvirt_domain_type


def _with_volumes(xml: str, options: ConvertOptions, uuid: str) -> str:
    """The domain with the UUID the plan chose (what its lock names), its disks that
    are volumes named by their paths on their host, raw."""
    domain = DomainXml.parse(xml)
    domain.uuid = uuid or None
    if options.in_pool:
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
    return {"booted": check.booted, "line": check.line, "seconds": round(check.seconds, 1),
            "waited": check.waited}  # fmt: skip


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

"""`p2v convert`: a server (through its agent) or disk images -> a KVM guest that boots
on virtio."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from p2v.commands.options import (
    HelpLayout,
    add_checkpoint_option,
    add_schedule_options,
    add_timeout_options,
    rate,
    say,
    seconds,
)
from p2v.convert import DEFAULT_BOOT_TIMEOUT, RESUME_CHANGES
from p2v.destination import check_choice
from p2v.errors import EXIT_CODES, InputError
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "convert",
        help="turn a server's disks into a KVM guest that boots on virtio",
        description="Inspect the guest on the source disks (never writing them), plan the "
        "virtual machine, fix the guest in a private overlay (virtio drivers in the "
        "initramfs, filesystems and GRUB by UUID, NIC names pinned to their MACs), skip "
        "the filesystems' free space, copy the disks (qcow2 files on this host, or raw "
        "volumes of a storage pool of the -c host, this one or another) and write or "
        "define the domain. Each step is recorded in the journal (`p2v history`); a conversion "
        "that stops (crash, kill, full disk) goes on with --resume JOB.",
        epilog=EXIT_CODES,
        formatter_class=HelpLayout,
    )
    source = p.add_argument_group("source (one of)")
    source.add_argument(
        "--agent",
        metavar="HOST[:PORT]",
        help="a server running the p2v agent (its boot ISO): inventory and disks from it",
    )
    source.add_argument(
        "--secret-file",
        metavar="F",
        help="with --agent: a file holding the secret the agent shows or was given",
    )
    source.add_argument(
        "--disk",
        action="append",
        metavar="PATH",
        help="a disk image or block device of the server (repeatable, in the server's disk order)",
    )
    source.add_argument(
        "--inventory",
        metavar="FILE",
        help="the server's inventory (`p2v inventory --json`) for --disk "
        "sources: CPUs, memory, firmware, NICs and their MACs",
    )
    target = p.add_argument_group("target (one of)")
    target.add_argument("--target", choices=["kvm"], help="define the guest in libvirt")
    target.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="write the disks (qcow2) and the domain XML here, without libvirt",
    )
    p.add_argument(
        "-c",
        "--connect",
        default="qemu:///session",
        metavar="URI",
        help="libvirt URI for --target kvm and boot checks (default qemu:///session); "
        "another host's URI (qemu+tcp://HOST/system, qemu+ssh://...) puts the guest there",
    )
    p.add_argument(
        "--storage",
        type=Path,
        metavar="DIR",
        help="where --target kvm puts the disks on this host (default: "
        "/var/lib/libvirt/images when writable, else the state directory's images/)",
    )
    p.add_argument(
        "--pool",
        metavar="NAME",
        help="put the disks into this storage pool of the -c host, as raw volumes filled "
        "through the libvirt connection (default for another host: 'default')",
    )
    p.add_argument(
        "--name",
        help="the guest's name (default: the first disk's file name for --disk, the "
        "guest's hostname for --agent)",
    )
    p.add_argument("--vcpus", type=int, metavar="N", help="vCPUs, instead of the server's count")
    p.add_argument("--sockets", type=int, metavar="N", help="CPU sockets of the guest")
    p.add_argument(
        "--memory", type=int, metavar="MIB", help="memory in MiB, instead of the server's"
    )
    p.add_argument(
        "--cpu-model", metavar="MODEL", help="a named CPU model (default: the host's CPU under KVM)"
    )
    p.add_argument(
        "--secure-boot",
        action=argparse.BooleanOptionalAction,
        help="UEFI Secure Boot on (OVMF with Microsoft's keys enrolled) or off (default: as "
        "the server's inventory says; off without one)",
    )
    p.add_argument(
        "--network",
        default="user",
        metavar="user|network:NAME|bridge:NAME",
        help="how the guest's NICs connect (default: user)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="inspect and print the plan; copy nothing"
    )
    p.add_argument(
        "--verify-boot",
        action="store_true",
        help="start the guest headless and wait until it has booted (serial console)",
    )
    p.add_argument(
        "--boot-timeout",
        type=seconds,
        metavar="SECONDS",
        help=f"time limit of --verify-boot (default {DEFAULT_BOOT_TIMEOUT:g})",
    )
    p.add_argument("--start", action="store_true", help="--target kvm: leave the guest running")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing target disks and, with --target kvm, a stopped domain of "
        "the same name",
    )
    p.add_argument(
        "--bwlimit",
        metavar="RATE",
        type=rate,
        help="cap the copy's rate, in bytes/s (50M), to spare the server's network",
    )
    add_checkpoint_option(p)
    add_timeout_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--resume",
        metavar="JOB",
        help="finish an interrupted or failed conversion (`p2v history`), with the options "
        "it was started with (but --bwlimit, --connect-timeout, --io-timeout and "
        "--boot-timeout, which may be given anew); the steps it finished are not done again",
    )
    # What only a new conversion takes: a resumed one goes on with the job's own.
    new_only = [a.dest for a in p._actions if a.dest not in _RESUMABLE]
    p.set_defaults(func=_cmd_convert, new_only={dest: p.get_default(dest) for dest in new_only})
    add_schedule_options(p, _check_args)


_RESUMABLE = {"help", "debug", "resume", "json", *RESUME_CHANGES}


def _cmd_convert(args: argparse.Namespace) -> int:
    from imagebuilder.profile import Overrides
    from p2v.convert import pipeline, sources
    from p2v.destination import Destination
    from p2v.paths import state_dir
    from p2v.transfer.progress import BarReporter, QuietReporter

    _check_args(args)
    # A progress bar for each disk's copy on a terminal; --json keeps stdout for the result.
    reporter = BarReporter() if sys.stderr.isatty() else QuietReporter()
    if args.resume:
        changes = {
            key: getattr(args, key) for key in RESUME_CHANGES if getattr(args, key) is not None
        }
        return _run(lambda j: pipeline.resume(args.resume, j, say, reporter, changes), args)
    if args.agent:
        source = sources.agent_source(args.agent, args.secret_file)
    else:
        source = sources.disk_source(args.disk, args.inventory)
    options = pipeline.ConvertOptions(
        name=args.name or (Path(args.disk[0]).stem if args.disk else None),
        output_dir=args.output_dir.resolve() if args.output_dir else None,
        destination=Destination.choose(
            args.connect,
            args.pool,
            args.storage,
            args.network,
            args.overwrite,
            default_storage=lambda: _default_storage(state_dir()),
        ),  # fmt: skip
        overrides=Overrides(
            vcpus=args.vcpus,
            sockets=args.sockets,
            memory_mib=args.memory,
            cpu_model=args.cpu_model,
            secure_boot=args.secure_boot,
        ),
        dry_run=args.dry_run,
        verify_boot=args.verify_boot,
        start=args.start,
        boot_timeout=args.boot_timeout or DEFAULT_BOOT_TIMEOUT,
        bwlimit=args.bwlimit,
        checkpoint=args.checkpoint,
        connect_timeout=args.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
        io_timeout=args.io_timeout or DEFAULT_IO_TIMEOUT,
    )
    return _run(lambda j: pipeline.convert(source, options, j, say, reporter), args)


def _check_args(args: argparse.Namespace) -> None:
    """What `p2v convert` refuses before it looks at the source or the target."""
    if args.resume:
        given = [d for d, default in args.new_only.items() if getattr(args, d) != default]
        if given:
            named = ", ".join("--" + d.replace("_", "-") for d in given)
            raise InputError(
                f"--resume JOB goes on with the job's own source, target and options; "
                f"{named} cannot change them (a resumed job takes --bwlimit, "
                "--connect-timeout, --io-timeout and --boot-timeout)"
            )
        return
    if bool(args.agent) == bool(args.disk):
        raise InputError("convert needs one source: --agent HOST[:PORT], or --disk PATH")
    if bool(args.target) == bool(args.output_dir):
        raise InputError("choose one target: --target kvm, or --output-dir DIR")
    check_choice(args.connect, args.pool, args.storage)
    if args.agent:
        if args.inventory:
            raise InputError("--inventory is for --disk sources; the agent sends its own")
        if not args.secret_file:
            raise InputError(
                "--agent needs --secret-file F: the secret the agent's console shows "
                "(or the one it was given)"
            )


def _run(job: Any, args: argparse.Namespace) -> int:
    """Run a new or resumed conversion with the journal open, then report it."""
    from p2v.jobs.journal import Journal

    journal = Journal()
    try:
        result = job(journal)
    finally:
        journal.close()
    return _report(result, args)


def _report(result: Any, args: argparse.Namespace) -> int:
    from p2v.convert.pipeline import summary
    from p2v.units import format_size

    if args.json:
        print(json.dumps({"job_id": result.job_id, **summary(result)}, indent=2))
        return 0
    plan, guest = result.plan, result.plan.guest
    state = "planned (dry run)" if args.dry_run else "converted"
    print(f"job {result.job_id}: {plan.profile.name} {state}")
    print(
        f"  found    {guest['distro']} {guest['version']}, hostname {guest['hostname']}, "
        f"root {guest['root']}, {plan.profile.firmware}, "
        f"{format_size(plan.used_bytes)} of data"
    )
    if result.copies:
        moved = sum(c["copied"] for c in result.copies)
        size = sum(c["size"] for c in result.copies)
        print(
            f"  moved    {format_size(moved)} of {format_size(size)} of disk "
            f"({100 * moved / max(size, 1):.0f}%), free space skipped"
        )
    if result.fixups:
        counts = [f"{f['name']} ({len(f['changes'])})" for f in result.fixups if f["changes"]]
        total = sum(len(f["changes"]) for f in result.fixups)
        print(f"  fix-ups  {total} changes: {', '.join(counts)}; originals kept as *.p2v-orig")
    if result.xml_path:
        where = f"defined in {result.defined}" if result.defined else "written"
        print(f"  domain   {plan.profile.name} {where}: {result.xml_path}")
    if result.boot:
        booted = "booted" if result.boot["booted"] else "did NOT boot"
        print(f"  boot     {booted} in {result.boot['seconds']} s: {result.boot['line']}")
        for waited in result.boot.get("waited", []):
            print(f"           but its boot waited: {waited}")
    return 0


def _default_storage(state: Path) -> Path:
    """libvirt's own image directory where there is one (its QEMU user can reach it),
    else the state directory's images/."""
    shared = Path("/var/lib/libvirt/images")
    return shared if shared.is_dir() and os.access(shared, os.W_OK) else state / "images"

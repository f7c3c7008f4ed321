"""`p2v snapshot create|list|revert|delete`: a machine's whole state at one instant."""

from __future__ import annotations

import argparse
import json
from typing import Any

from p2v.commands.options import (
    HelpLayout,
    add_connect_timeout_option,
    add_schedule_options,
    count,
    run_or_resume,
)
from p2v.errors import EXIT_CODES, InputError
from p2v.host.virt import DEFAULT_URI
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT

ACTIONS = ("create", "list", "revert", "delete")


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "snapshot",
        help="take, list, revert to and delete a virtual machine's snapshots",
        description="A snapshot holds a virtual machine's disks and, when it runs, its "
        "memory, CPU and device state, and a UEFI guest's variables: libvirt's external "
        "snapshot (each disk goes on in a new overlay beside it, the memory is saved to a "
        "file there while the guest runs, which then pauses for the last of it; the pause "
        "is measured). `create VM [NAME]` takes one (NAME defaults to the time); `list VM` "
        "shows them with their times, sizes and which is current (--tree draws the tree); "
        "`revert VM NAME` brings the exact state back (a running guest only with --force: "
        "what it did since is lost); `delete VM NAME` removes one, merging its overlays so "
        "every other snapshot can still be reverted to. Each is a job in the journal, the "
        "VM locked meanwhile; everything that would be refused is refused before anything "
        "changes.",
        epilog=EXIT_CODES,
        formatter_class=HelpLayout,
    )
    p.add_argument("action", nargs="?", choices=ACTIONS, metavar="ACTION",
                   help="create, list, revert or delete")  # fmt: skip
    p.add_argument("vm", nargs="?", metavar="VM", help="the virtual machine's name or UUID")
    p.add_argument("name", nargs="?", metavar="NAME", help="the snapshot's name")
    p.add_argument("-c", "--connect", default=DEFAULT_URI, metavar="URI",
                   help=f"the VM's libvirt host (default {DEFAULT_URI})")  # fmt: skip
    p.add_argument("--disk-only", action="store_true",
                   help="create: the disks only, not the memory (no pause)")  # fmt: skip
    p.add_argument("--description", default="", metavar="TEXT",
                   help="create: a few words kept with the snapshot")  # fmt: skip
    p.add_argument("--force", action="store_true",
                   help="revert: a running VM too, losing what it did since")  # fmt: skip
    p.add_argument("--keep", type=count, metavar="N",
                   help="create: a rotation; NAME (default snap) is a prefix, each snapshot "
                   "NAME-YYYYmmdd-HHMMSS, and once it is taken the oldest of them beyond N "
                   "are deleted (with --every: keeps exactly N)")  # fmt: skip
    p.add_argument("--tree", action="store_true", help="list: draw the snapshots as a tree")
    p.add_argument("--json", action="store_true", help="print the record, or the list, as JSON")
    p.add_argument("--resume", metavar="JOB", help="go on with a snapshot job that stopped")
    add_connect_timeout_option(p, DEFAULT_CONNECT_TIMEOUT)
    p.set_defaults(func=_cmd_snapshot)
    add_schedule_options(p, _check_schedule)


def _check_schedule(args: argparse.Namespace) -> None:
    """A schedule takes snapshots again and again: `create`, and with a NAME only as a
    rotation's prefix (--keep), since a name is taken once."""
    if args.resume or args.action != "create":
        raise InputError("--at, --every and --cron schedule `snapshot create`")
    if args.name and not args.keep and (args.schedule_every or args.schedule_cron):
        raise InputError(f"a snapshot named {args.name!r} can be taken once: give --keep N "
                         "(NAME is then a prefix), or no NAME")  # fmt: skip
    _request(args)


def _request(args: argparse.Namespace) -> Any:
    from p2v.snapshot.job import Request
    from p2v.snapshot.plan import checked_name, default_name

    if args.action is None or args.vm is None:
        raise InputError("snapshot needs ACTION and VM: `p2v snapshot create VM [NAME]`, "
                         "`list VM`, `revert VM NAME` or `delete VM NAME`")  # fmt: skip
    if args.action in ("revert", "delete") and not args.name:
        raise InputError(f"snapshot {args.action} needs the snapshot's NAME "
                         f"(`p2v snapshot list {args.vm}` shows them)")  # fmt: skip
    misplaced = [flag for flag, given, action in (
        ("--disk-only", args.disk_only, "create"), ("--description", args.description, "create"),
        ("--keep", args.keep, "create"), ("--force", args.force, "revert"),
        ("--tree", args.tree, "list"),
    ) if given and args.action != action]  # fmt: skip
    if misplaced:
        raise InputError(f"{', '.join(misplaced)} does not go with snapshot {args.action}")
    rotation = checked_name(args.name or "snap") if args.keep else None
    if rotation:
        name = default_name(prefix=rotation)
    else:
        name = checked_name(args.name) if args.name else default_name()
    return Request(action=args.action, vm=args.vm, uri=args.connect, name=name,
                   disk_only=args.disk_only, force=args.force, description=args.description,
                   connect_timeout=args.connect_timeout, rotation=rotation,
                   keep=args.keep)  # fmt: skip


def _cmd_snapshot(args: argparse.Namespace) -> int:
    from p2v.snapshot import job

    if args.resume:
        if args.action or args.vm:
            raise InputError("--resume JOB takes the job's own VM and snapshot; give it alone")
    elif args.action == "list":
        return _list(args)
    return run_or_resume(args, job, None if args.resume else _request(args))


def _list(args: argparse.Namespace) -> int:
    from p2v.snapshot import listing

    if args.name or args.disk_only or args.force or args.description or args.keep:
        raise InputError("snapshot list takes VM, -c URI, --tree and --json")
    if args.vm is None:
        raise InputError("snapshot list needs VM")
    listed = listing.snapshots_of(args.connect, args.vm, args.connect_timeout)
    if args.json:
        print(json.dumps([s.to_json() for s in listed], indent=2))
    elif not listed:
        print(f"{args.vm} has no snapshots")
    elif args.tree:
        print("\n".join(listing.draw(listed)))
    else:
        width = max(len(s.name) for s in listed)
        print(f"{'NAME':<{width}}  {'TAKEN':<19}  {'HOLDS':<14}  {'SIZE':>10}  PARENT")
        for s in listed:
            holds = "memory + disks" if s.memory else "disks"
            mark = " *" if s.current else ""
            print(f"{s.name:<{width}}  {_time(s.created)}  {holds:<14}  "
                  f"{_size(s.size):>10}  {s.parent or '-'}{mark}")  # fmt: skip
        print("* current")
    return 0


def _time(t: float) -> str:
    from p2v.units import format_time

    return format_time(t)


def _size(n: int) -> str:
    from p2v.units import format_size

    return format_size(n)

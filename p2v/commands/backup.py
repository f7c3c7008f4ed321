"""`p2v backup VM --to DIR`, `p2v backup list|verify DIR`, `p2v restore DIR`:
incremental backups through libvirt's backup API, and their way back."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from p2v.commands.options import (
    HelpLayout,
    add_connect_timeout_option,
    add_schedule_options,
    count,
    job_reporter,
    port,
    print_job,
    rate,
    say,
    seconds,
)
from p2v.errors import EXIT_CODES, BackupMismatch, BootCheckError, InputError
from p2v.host.virt import DEFAULT_URI
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT

TOOLS = ("list", "verify", "prune")


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "backup",
        help="back a virtual machine up, fully or incrementally; list and verify backups",
        description="`backup VM --to DIR` backs the VM's disks up through libvirt's backup "
        "API while it runs: a checkpoint marks the instant, the guest's filesystems frozen "
        "for it when its guest agent answers (else crash-consistent, recorded either way), "
        "and only the blocks written since the last backup are read and stored (a shut-off "
        "VM is started paused for it). DIR holds one folder per backup, a qcow2 per disk "
        "whose backing file is the backup it builds on, and a catalog with the VM's XML "
        "and every block's digest. The first backup is full; then incremental, unless "
        "--full or --differential (from the last full). If the chain is lost (a checkpoint "
        "gone, a disk added) the backup is full and says why. `backup list DIR` shows the "
        "chain; `backup verify DIR` reads every point back and checks every digest and "
        "link. --keep-last/--keep-daily/--keep-weekly drop older backups after a backup "
        "(or `backup prune DIR`), each merged into the backups that build on it (one that "
        "built on a dropped full becomes a full), so the rest of the chain still restores. "
        "From another host the export is read over TCP with TLS (--tls-certs).",
        epilog=EXIT_CODES,
        formatter_class=HelpLayout,
    )
    p.add_argument("vm", nargs="?", metavar="VM|list|verify|prune",
                   help="the VM to back up; or list, verify or prune, then DIR")  # fmt: skip
    p.add_argument("directory", nargs="?", metavar="DIR", help="list, verify, prune: the directory")
    p.add_argument("--to", metavar="DIR", help="the backup directory (made if missing)")
    p.add_argument("-c", "--connect", default=DEFAULT_URI, metavar="URI",
                   help=f"the VM's libvirt host (default {DEFAULT_URI})")  # fmt: skip
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="a full backup, whatever the directory holds")  # fmt: skip
    kind.add_argument("--incremental", dest="mode", action="store_const", const="incremental",
                      help="what changed since the last backup (the default after a "
                      "first)")  # fmt: skip
    kind.add_argument("--differential", dest="mode", action="store_const", const="differential",
                      help="what changed since the last full backup")  # fmt: skip
    p.add_argument("--tls-certs", metavar="DIR",
                   help="for a remote host's export: ca-cert.pem, client-cert.pem and "
                   "client-key.pem")  # fmt: skip
    p.add_argument("--bwlimit", type=rate, metavar="RATE",
                   help="read at most RATE bytes a second from the VM (50M, 1G)")  # fmt: skip
    p.add_argument("--nbd-port", type=port, default=10809, metavar="PORT",
                   help="a remote host's export listens on this port of the host's address "
                   "(default 10809)")  # fmt: skip
    for period, what in (
        ("last", "the N newest backups"),
        ("daily", "the newest backup of each of the N latest days"),
        ("weekly", "the newest backup of each of the N latest weeks"),
    ):
        p.add_argument(f"--keep-{period}", type=count, metavar="N", default=0,
                       help=f"retention, after a backup or with prune: keep {what}")  # fmt: skip
    p.add_argument("--graph", action="store_true",
                   help="list: draw the chain as a tree (what each backup builds on)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the record, or the list, as JSON")
    p.add_argument("--resume", metavar="JOB", help="go on with a backup job that stopped")
    add_connect_timeout_option(p, DEFAULT_CONNECT_TIMEOUT)
    p.set_defaults(func=_cmd_backup, mode=None)
    add_schedule_options(p, _check_schedule)

    r = verbs.add_parser(
        "restore",
        help="rebuild a VM's disks from a backup directory, at any point of its chain",
        description="Rebuilds each disk as it was when the backup --at names was taken "
        "(default: the newest), from the chain of backups it builds on, and checks the "
        "result's digest against the one recorded then. --to is a file (raw, or qcow2 by "
        "its name) for a one-disk VM, else a directory that gets TARGET.qcow2 per disk. "
        "--define NAME brings the point back as a VM on the -c host: its disks uploaded "
        "into qcow2 volumes of --pool, the backed-up definition defined as NAME (its UUID "
        "where the host has none such, its MAC addresses, fresh UEFI variables). "
        "--check is a restore drill: the point restored to a scratch place and booted "
        "headless on this machine, its NICs on QEMU's user network, the console read "
        "until it has come up (exit 8 if not), then all removed. Each restore is a job "
        "(`p2v history`): one stopped half-way goes on with --resume JOB, each disk from "
        "where its copy stopped. The backup directory is locked meanwhile.",
        epilog=EXIT_CODES,
        formatter_class=HelpLayout,
    )
    r.add_argument("directory", nargs="?", metavar="DIR", help="the backup directory")
    r.add_argument("--at", metavar="BACKUP", help="a backup's name or number (`backup list DIR`)")
    r.add_argument("--to", metavar="PATH", help="where the disks go")
    r.add_argument("--define", metavar="NAME",
                   help="define the VM as NAME on the -c host, its disks uploaded into qcow2 "
                   "volumes of --pool")  # fmt: skip
    r.add_argument("--pool", default="default", metavar="POOL",
                   help="--define: the storage pool for its disks (default: default)")  # fmt: skip
    r.add_argument("--check", action="store_true",
                   help="a restore drill: restore to a scratch place, boot the VM from it "
                   "headless (no network but QEMU's own), report whether it came up, "
                   "remove it all")  # fmt: skip
    r.add_argument("-c", "--connect", default=DEFAULT_URI, metavar="URI",
                   help=f"--define, --check: the libvirt host (default {DEFAULT_URI})")  # fmt: skip
    r.add_argument("--boot-timeout", type=seconds, default=600.0, metavar="S",
                   help="--check: seconds to wait for it to come up (default 600)")  # fmt: skip
    r.add_argument("--overwrite", action="store_true", help="replace an existing --to file")
    r.add_argument("--bwlimit", type=rate, metavar="RATE",
                   help="write at most RATE bytes a second (50M, 1G)")  # fmt: skip
    r.add_argument("--resume", metavar="JOB", help="go on with a restore job that stopped")
    add_connect_timeout_option(r, DEFAULT_CONNECT_TIMEOUT)
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.set_defaults(func=_cmd_restore)


def _request(args: argparse.Namespace) -> Any:
    from p2v.backup.job import Request

    if args.vm in TOOLS:
        raise InputError(f"backup {args.vm} DIR cannot be scheduled")
    if not args.vm or not args.to:
        raise InputError("backup needs VM and --to DIR (or: backup list|verify DIR)")
    if args.directory:
        raise InputError(f"backup {args.vm}: the directory goes after --to, not {args.directory!r}")
    return Request(vm=args.vm, uri=args.connect, directory=str(Path(args.to).resolve()),
                   mode=args.mode or "auto", tls_certs=args.tls_certs, nbd_port=args.nbd_port,
                   connect_timeout=args.connect_timeout, keep=_keep(args).__dict__,
                   bwlimit=args.bwlimit)  # fmt: skip


def _keep(args: argparse.Namespace) -> Any:
    from p2v.backup.plan import Retention

    return Retention(last=args.keep_last, daily=args.keep_daily, weekly=args.keep_weekly)


def _check_schedule(args: argparse.Namespace) -> None:
    if args.resume:
        raise InputError("--resume goes on now: it cannot be scheduled")
    _request(args)


def _cmd_backup(args: argparse.Namespace) -> int:
    from p2v.backup import job
    from p2v.jobs.journal import Journal

    if args.vm in TOOLS and not args.resume:
        return _tool(args)
    if args.resume and (args.vm or args.to):
        raise InputError("--resume JOB takes the job's own VM and directory (and --bwlimit)")
    request = None if args.resume else _request(args)
    journal = Journal()
    reporter = job_reporter(args)
    try:
        if request is None:
            job_id, record = job.resume(args.resume, journal, say, reporter, args.bwlimit)
        else:
            job_id, record = job.run(request, journal, say, reporter)
    finally:
        journal.close()
    return print_job(args, job_id, record, job.summary)


def _tool(args: argparse.Namespace) -> int:
    from p2v.backup import chain

    if not args.directory:
        raise InputError(f"backup {args.vm} needs DIR")
    if args.to or args.mode:
        raise InputError(f"backup {args.vm} DIR takes no --to or backup kind")
    directory = Path(args.directory)
    if args.vm == "prune":
        return _prune(args, directory)
    if _keep(args):
        raise InputError(f"--keep-* go with a backup or with backup prune, not {args.vm}")
    if args.graph and args.vm != "list":
        raise InputError("--graph goes with backup list")
    if args.vm == "verify":
        findings = chain.verify(directory, say, job_reporter(args))
        if args.json:
            print(json.dumps([f.__dict__ for f in findings]))
        elif findings:
            print(f"{len(findings)} problem(s) in {directory}")
        else:
            print(f"every backup in {directory} reads back as recorded")
        return BackupMismatch.exit_code if findings else 0
    rows = chain.listing(directory)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"{directory} holds no complete backup")
        return 0
    from p2v.units import format_size, format_time

    if args.graph:
        print("\n".join(chain.graph(rows)))
        return 0
    print(f"{'BACKUP':<24} {'KIND':<12} {'TAKEN':<19} {'READ':>9} {'STORED':>9}  DIGEST")
    for row in rows:
        for target, d in row["disks"].items():
            print(f"{row['backup']:<24} {row['kind']:<12} {format_time(row['started']):<19} "
                  f"{format_size(d['read'] or 0):>9} {format_size(d['stored']):>9}  "
                  f"{target} {str(d['digest'])[:28]}…")  # fmt: skip
        if row["why_full"]:
            print(f"{'':<24} ({row['why_full']})")
    return 0


def _prune(args: argparse.Namespace, directory: Path) -> int:
    from p2v.backup import retention
    from p2v.backup.catalog import Catalog, directory_lock
    from p2v.jobs.journal import Journal
    from p2v.jobs.runner import Kind, Run

    keep = _keep(args)
    if not keep:
        raise InputError("backup prune needs --keep-last, --keep-daily or --keep-weekly")
    where = directory.resolve()
    kind = Kind("prune", lambda p, r: f"prune {p['directory']}",
                lambda r: f"{len(r.get('dropped', []))} backup(s) dropped",
                resumable=False)  # fmt: skip
    journal = Journal()
    try:  # a job of its own, holding the directory against a backup into it meanwhile
        lock = directory_lock(where)
        journal.refuse_held(lock)
        job = Run.start(kind, {"directory": str(where), "keep": keep.__dict__}, journal, say)

        def drive() -> dict[str, Any]:
            job.lock(lock)
            with Catalog(directory) as catalog:
                return {"dropped": [b.folder() for b in retention.apply(catalog, keep, say)]}

        dropped = job.execute(drive)["dropped"]
    finally:
        journal.close()
    if args.json:
        print(json.dumps({"dropped": dropped}))
    else:
        print(f"{len(dropped)} backup(s) dropped" if dropped else "nothing to drop")
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from p2v.backup import restore
    from p2v.jobs.journal import Journal

    if args.resume:
        if args.directory or args.to or args.define or args.check or args.at:
            raise InputError("--resume JOB takes the job's own directory, point and "
                             "destination (and --bwlimit)")  # fmt: skip
    else:
        if not args.directory:
            raise InputError("restore needs DIR, the backup directory (or --resume JOB)")
        if sum(bool(x) for x in (args.to, args.define, args.check)) != 1:
            raise InputError("restore takes one of --to PATH, --define NAME and --check")
        if args.check and args.overwrite:
            raise InputError("restore --check restores to a scratch place of its own")
    journal = Journal()
    try:
        if args.resume:
            job_id, done = restore.resume(args.resume, journal, say, job_reporter(args),
                                          args.bwlimit)  # fmt: skip
        else:
            request = restore.Request(
                directory=args.directory, at=args.at, to=args.to, define=args.define,
                check=args.check, uri=args.connect, pool=args.pool, overwrite=args.overwrite,
                bwlimit=args.bwlimit, boot_timeout=args.boot_timeout,
                connect_timeout=args.connect_timeout,
            )  # fmt: skip
            job_id, done = restore.run(request, journal, say, job_reporter(args))
    finally:
        journal.close()
    if args.json:
        print(json.dumps({"job": job_id, **done}))
    elif "booted" in done:
        print(f"{done['backup']} {'came up' if done['booted'] else 'did NOT come up'} in "
              f"{done['seconds']} s: {done['line']}")  # fmt: skip
    elif "name" in done:
        print(f"{done['name']} defined on {done['uri']} from {done['backup']}")
    else:
        print(f"restored {done['backup']}: " + ", ".join(
            f"{t} -> {d['path']}" for t, d in done["disks"].items()))  # fmt: skip
    if done.get("booted") is False:
        return BootCheckError.exit_code
    return 0

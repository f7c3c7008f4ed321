"""`p2v migrate`: move a virtual machine to another libvirt host, shut off (cold) or
running (live)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from p2v.commands.options import (
    HelpLayout,
    add_connect_timeout_option,
    add_schedule_options,
    count,
    seconds,
)
from p2v.errors import EXIT_CODES, InputError, MigrationError
from p2v.host.virt import DEFAULT_URI
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT

DEFAULT_MAX_DOWNTIME_MS = 300


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "migrate",
        help="move a virtual machine to another libvirt host, shut off or running",
        description="Move VM from the -c host to the --to host. Shut off (cold): its disks "
        "are copied volume to volume through libvirt, read back there and compared by "
        "digest; the move stops if the VM is started, or its disks change, meanwhile; the "
        "same definition (UUID, MACs) is defined there, the source sets it not to "
        "autostart and undefines it, and only then is it started there if it was set to "
        "autostart. Running (--live): libvirt "
        "and QEMU copy its memory while it runs (and its disks, its writes mirrored, when "
        "the destination lacks them), pause it for the last piece, resume it there and "
        "release the source; a guest that dirties memory too fast for pre-copy is "
        "escalated (downtime limit up to --max-downtime, auto-converge, post-copy) so "
        "the migration finishes. Each phase is a step in the journal (`p2v show JOB`).",
        epilog=EXIT_CODES,
        formatter_class=HelpLayout,
    )
    p.add_argument("vm", nargs="?", metavar="VM", help="the virtual machine's name or UUID")
    p.add_argument("--to", metavar="URI", help="the destination host's libvirt URI")
    p.add_argument(
        "-c", "--connect", default=DEFAULT_URI, metavar="URI",
        help=f"the source host's libvirt URI (default {DEFAULT_URI}); its libvirt opens "
        "--to itself (peer to peer), so --to must be a URI the source host can reach",
    )  # fmt: skip
    p.add_argument("--live", action="store_true", help="migrate the VM while it runs")
    p.add_argument(
        "--copy-storage", action=argparse.BooleanOptionalAction, default=None,
        help="copy the disks to the destination (default: when it lacks them; storage both "
        "hosts share is never copied)",
    )  # fmt: skip
    p.add_argument(
        "--pool", metavar="NAME",
        help="cold: the destination pool for the disks (default: the pool at the same "
        "directory there, else 'default'); live: the disks keep their paths",
    )  # fmt: skip
    p.add_argument(
        "--max-downtime", type=count, default=DEFAULT_MAX_DOWNTIME_MS, metavar="MS",
        help="the longest pause of the guest the policy may allow at switch-over (default "
        f"{DEFAULT_MAX_DOWNTIME_MS}); it starts lower and rises only when passes stall",
    )  # fmt: skip
    p.add_argument(
        "--postcopy", action=argparse.BooleanOptionalAction, default=True,
        help="let a migration that pre-copy cannot finish switch to post-copy, the guest "
        "running on the destination while the rest of its memory follows (default on; "
        "off by itself when the destination's QEMU cannot)",
    )  # fmt: skip
    p.add_argument(
        "--auto-converge", action=argparse.BooleanOptionalAction, default=True,
        help="let QEMU slow the guest's vCPUs while it outruns the link (default on)",
    )  # fmt: skip
    p.add_argument(
        "--no-escalate", dest="escalate", action="store_false",
        help="pre-copy at --max-downtime only: no throttling, no post-copy (give --timeout)",
    )  # fmt: skip
    p.add_argument(
        "--timeout", type=seconds, metavar="SECONDS",
        help="stop a live migration not finished after this long (its storage copy "
        "included); the guest stays on the source (post-copy, once begun, always finishes)",
    )  # fmt: skip
    p.add_argument(
        "--bandwidth", type=count, metavar="MIB/S",
        help="cap the migration's rate, in MiB/s (live: memory and disks; cold: the copy)",
    )  # fmt: skip
    p.add_argument(
        "--delete-source", action="store_true",
        help="delete the source's copies of the disks at the end: once the destination runs "
        "the guest (live), or holds copies synced to its disk and read back equal (cold)",
    )  # fmt: skip
    p.add_argument(
        "--tls", action="store_true",
        help="live: send the guest's memory and disks between the two hosts' QEMUs over TLS "
        "(libvirt's migrate_tls_x509_cert_dir must hold certificates on both hosts); "
        "without it they cross the network unencrypted. Cold moves go through the libvirt "
        "connections themselves: encrypted when -c and --to are qemu+tls:// or qemu+ssh://",
    )  # fmt: skip
    add_connect_timeout_option(p, DEFAULT_CONNECT_TIMEOUT)
    p.add_argument(
        "--io-timeout", type=seconds, default=DEFAULT_IO_TIMEOUT, metavar="SECONDS",
        help=f"cold: fail when a host sends no reply for this long mid-copy (default "
        f"{DEFAULT_IO_TIMEOUT:g}); the job can be resumed",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="progress as JSON lines, then the record")
    p.add_argument("--resume", metavar="JOB", help="go on with a migration that stopped")
    p.add_argument("--cancel", metavar="JOB", help="stop a running migration")
    p.add_argument(
        "--cleanup", metavar="JOB",
        help="remove what a failed migration you will not resume made on its destination "
        "(partial disk copies); the VM must still be on its source",
    )  # fmt: skip
    p.set_defaults(func=_cmd_migrate)
    add_schedule_options(p, _check_args)


def _check_args(args: argparse.Namespace) -> None:
    if given := [o for o in ("resume", "cancel", "cleanup") if getattr(args, o)]:
        if args.schedule_at or args.schedule_every or args.schedule_cron:
            raise InputError("--at, --every and --cron schedule a new migration, not "
                             f"--{given[0]}")  # fmt: skip
        if args.vm or args.to or len(given) > 1:
            raise InputError("--resume JOB, --cancel JOB and --cleanup JOB take the job's own "
                             "VM and hosts; give one of them alone")  # fmt: skip
        return
    if not args.vm or not args.to:
        raise InputError("migrate needs VM and --to URI (the destination host)")
    if args.to == args.connect:
        raise InputError(f"--to {args.to} is the source itself (-c): choose another host")
    if args.pool and args.live:
        raise InputError("--pool is for cold migrations: a live one keeps the disks' paths")
    if args.tls and not args.live:
        raise InputError("--tls is for live migrations: a cold one's data goes through the "
                         "libvirt connections (use qemu+tls:// or qemu+ssh:// URIs)")  # fmt: skip


def _cmd_migrate(args: argparse.Namespace) -> int:
    from p2v.jobs.journal import Journal
    from p2v.migrate import job
    from p2v.migrate.checks import Request

    _check_args(args)
    journal = Journal()
    try:
        if args.cancel:
            print(job.cancel(args.cancel, journal))
            return 0
        say, progress, reporter = _outputs(args)
        if args.cleanup:
            print(job.cleanup(args.cleanup, journal, say))
            return 0
        if args.resume:
            job_id, record = job.resume(args.resume, journal, say, progress, reporter)
        else:
            request = Request(
                vm=args.vm, source=args.connect, destination=args.to, live=args.live,
                copy_storage=args.copy_storage, pool=args.pool,
                max_downtime_ms=args.max_downtime, escalate=args.escalate,
                postcopy=args.postcopy, auto_converge=args.auto_converge,
                timeout=args.timeout, bandwidth_mib=args.bandwidth,
                delete_source=args.delete_source, tls=args.tls,
                connect_timeout=args.connect_timeout,
                io_timeout=args.io_timeout,
            )  # fmt: skip
            job_id, record = job.migrate(request, journal, say, progress, reporter)
    except MigrationError as error:
        if args.json and error.record:  # scripts get the record of what did not finish
            print(json.dumps({"event": "failed", "error": str(error), **error.record}))
        raise
    finally:
        journal.close()
    if args.json:
        print(json.dumps({"event": "done", "job": job_id, **record}))
    else:
        print(f"job {job_id}: {job.summary(record)}")
    return 0


def _outputs(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from p2v.migrate.progress import Bar, JsonLines, Quiet
    from p2v.transfer.progress import BarReporter, JsonReporter, QuietReporter

    def say(message: str) -> None:
        from tqdm import tqdm

        # Above a progress bar, when one is drawn, not through it.
        tqdm.write(f"p2v: {message}", file=sys.stderr)

    if args.json:
        return say, lambda job_id, _vm: JsonLines(job_id), JsonReporter()
    if sys.stderr.isatty():
        return say, lambda job_id, vm: Bar(job_id, vm), BarReporter()
    return say, lambda _job, _vm: Quiet(), QuietReporter()

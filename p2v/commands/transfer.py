"""`p2v copy` and `p2v checksum`: the transfer engine on the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from p2v.commands.options import (
    HelpLayout,
    add_checkpoint_option,
    add_schedule_options,
    add_timeout_options,
    count,
    rate,
)
from p2v.errors import InputError
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, TARGET_FORMATS, blockhash
from p2v.units import format_size

if TYPE_CHECKING:
    from p2v.transfer.progress import Reporter

# The engine and its libraries load only when a verb runs: `p2v --help` stays quick.

_ENDPOINTS = """\
endpoints:
  PATH                raw file or block device; other formats (qcow2, vmdk, ...)
                      through a private qemu-nbd. A target's format follows its
                      name (.qcow2, else raw) unless --output-format is given.
  nbd://HOST[:PORT]/EXPORT, nbds://... (TLS), nbd+unix:///EXPORT?socket=PATH
                      any NBD URI that libnbd accepts
  null:               a target that discards (benchmarks); null:SIZE as a
                      source reads SIZE bytes of zeros
  agent://HOST[:PORT]/DISK
                      a disk served by `p2v-agent serve` (source only; DISK is
                      its kernel name, e.g. sda); needs --secret-file
"""

_DIGEST = f"""\
digest:
  {blockhash.PREFIX}:HEX depends only on the disk's content: a raw image and
  a qcow2 of the same disk have the same digest. BLAKE3 of 64 KiB pieces,
  of 4 MiB blocks, then of the whole disk; zero blocks are never read.
"""


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "copy",
        help="copy a disk: sparse, parallel, verified, resumable",
        description="Copy SRC to DST. Only allocated data is read, zero runs are not "
        "written, and the target ends up sparse. Every finished block is recorded in the "
        "journal once the target is flushed, so an interrupted copy resumes where it "
        "stopped. Prints the digest of what was copied.",
        epilog=_ENDPOINTS + "\n" + _DIGEST,
        formatter_class=HelpLayout,
    )
    p.add_argument("source", nargs="?", metavar="SRC", help="disk to read (never written)")
    p.add_argument("target", nargs="?", metavar="DST", help="disk or image to write")
    p.add_argument("--resume", metavar="JOB", help="finish an interrupted or failed copy job")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing target; one that holds an earlier copy of SRC, "
        "unchanged since, gets only the blocks that differ",
    )
    p.add_argument("--output-format", choices=TARGET_FORMATS, help="format of a new target")
    p.add_argument("--input-format", metavar="FMT", help="format of SRC (default: probed)")
    p.add_argument("--verify", action="store_true", help="read the target back and compare digests")
    p.add_argument(
        "--rescue",
        action="store_true",
        help="fill source ranges that stay unreadable with zeros and list them, instead of failing",
    )
    p.add_argument(
        "--dirty-bitmap",
        metavar="NAME",
        help="incremental: copy only what the QEMU dirty bitmap NAME marks, onto an "
        "existing target",
    )
    p.add_argument(
        "--free-map",
        metavar="FILE",
        help="JSON list of [offset, length] ranges known to be free; they are not read "
        "and read as zeros on the target",
    )
    p.add_argument(
        "--secret-file", metavar="F", help="file holding the secret of an agent:// source"
    )
    p.add_argument("--bwlimit", metavar="RATE", type=rate, help="cap, in bytes/s (50M)")
    add_checkpoint_option(p)
    add_timeout_options(p)
    p.add_argument(
        "--connections",
        type=count,
        metavar="N",
        help="connections to each side, one thread each (default: 4 from a local file, "
        "which is read synchronously; else one per core, up to 4)",
    )
    p.add_argument(
        "--requests",
        type=count,
        default=8,
        metavar="N",
        help="4 MiB blocks in flight per connection (default 8)",
    )
    p.add_argument(
        "--json", action="store_true", help="progress and result as JSON lines on stdout"
    )
    add_schedule_options(p, _check_copy)
    p.set_defaults(func=_cmd_copy)

    p = verbs.add_parser(
        "checksum",
        help="print the block-hash digest of a disk",
        description="Compute the digest of SRC, the same one `p2v copy` prints.",
        epilog=_ENDPOINTS + "\n" + _DIGEST,
        formatter_class=HelpLayout,
    )
    p.add_argument("source", metavar="SRC")
    p.add_argument("--input-format", metavar="FMT", help="format of SRC (default: probed)")
    p.add_argument(
        "--secret-file", metavar="F", help="file holding the secret of an agent:// source"
    )
    add_timeout_options(p, resumable=False)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_checksum)


def _reporter(args: argparse.Namespace) -> Reporter:
    from p2v.transfer.progress import BarReporter, JsonReporter, QuietReporter

    if args.json:
        return JsonReporter()
    return BarReporter() if sys.stderr.isatty() else QuietReporter()


def _cmd_copy(args: argparse.Namespace) -> int:
    from p2v.jobs.journal import Journal
    from p2v.transfer import delta, jobs
    from p2v.transfer.progress import JsonReporter

    _check_copy(args)
    if args.target:
        args.target = dated(args.target)
    reporter = _reporter(args)
    journal = Journal()
    try:
        if args.resume:
            result = jobs.resume(
                args.resume,
                journal,
                reporter,
                bwlimit=args.bwlimit,
                connect_timeout=args.connect_timeout,
                io_timeout=args.io_timeout,
            )
        else:
            connect_timeout = args.connect_timeout or DEFAULT_CONNECT_TIMEOUT
            earlier = None
            if args.overwrite and not args.dirty_bitmap:
                earlier = delta.unchanged_copy(
                    journal, args.source, args.target, args.output_format, connect_timeout
                )
            if earlier is not None:
                print(f"p2v: {args.target} holds job {earlier.id}'s copy, unchanged since: "
                      "only what changed is sent", file=sys.stderr, flush=True)  # fmt: skip
            request = jobs.CopyRequest(
                source=args.source,
                target=args.target,
                input_format=args.input_format,
                output_format=args.output_format,
                overwrite=args.overwrite,
                dirty_bitmap=args.dirty_bitmap,
                rescue=args.rescue,
                verify=args.verify,
                connections=args.connections,
                requests=args.requests,
                bwlimit=args.bwlimit,
                checkpoint=args.checkpoint,
                free=_free_map(args.free_map) if args.free_map else [],
                secret_file=args.secret_file and os.path.abspath(args.secret_file),
                connect_timeout=connect_timeout,
                io_timeout=args.io_timeout or DEFAULT_IO_TIMEOUT,
                held_from=earlier.id if earlier else None,
            )
            result = jobs.copy(request, journal, reporter)
    finally:
        journal.close()
    if args.json:
        assert isinstance(reporter, JsonReporter)
        reporter.emit("done", **result.to_json())
        return 0
    handled = result.copied + result.zeroed + result.skipped + result.unchanged
    rate = handled / max(result.elapsed, 1e-9)
    print(
        f"job {result.job_id} done in {result.elapsed:.1f} s ({format_size(rate)}/s): "
        f"copied {format_size(result.copied)}, zeros {format_size(result.zeroed)}, "
        f"skipped {format_size(result.skipped)}, read {format_size(result.read)}"
        + (f", unchanged {format_size(result.unchanged)}" if result.unchanged else "")
        + (f", done before {format_size(result.resumed)}" if result.resumed else "")
    )
    print(f"digest {result.digest}" if result.digest else "digest: not computed (incremental)")
    if result.verified:
        print("verified: the target reads back with the same digest")
    for offset, length in result.bad:
        print(f"unreadable, filled with zeros: offset {offset} length {length}")
    return 0


# {date} and {time} in a copy's target: the day or the moment each run makes it.
TARGET_TIMES = {"date": "%Y%m%d", "time": "%Y%m%d-%H%M%S"}


def dated(target: str, now: float | None = None) -> str:
    for key, layout in TARGET_TIMES.items():
        target = target.replace(f"{{{key}}}", time.strftime(layout, time.localtime(now)))
    return target


def _check_copy(args: argparse.Namespace) -> None:
    """What `p2v copy` refuses before it opens anything."""
    if args.resume:
        if args.source or args.target:
            raise InputError("--resume takes the job's own source and target; give none")
        return
    if not (args.source and args.target):
        raise InputError("copy needs SRC and DST (or --resume JOB)")
    repeated = getattr(args, "schedule_every", None) or getattr(args, "schedule_cron", None)
    if (repeated and not args.target.startswith("null:") and not args.overwrite
            and not any(f"{{{k}}}" in args.target for k in TARGET_TIMES)):  # fmt: skip
        raise InputError(
            f"a copy repeated to {args.target} fails from its second run, which finds the "
            "target there: add --overwrite (each run sends what changed since the one "
            "before), or put {date} or {time} in its name (backup-{date}.raw)"
        )
    if (args.connections or 1) > 16 or args.requests > 64:
        raise InputError("--connections must be 1-16 and --requests 1-64")


def _cmd_checksum(args: argparse.Namespace) -> int:
    from p2v.transfer import jobs
    from p2v.transfer.progress import BarReporter, QuietReporter

    reporter = BarReporter() if sys.stderr.isatty() and not args.json else QuietReporter()
    digest, size = jobs.checksum(
        args.source,
        input_format=args.input_format,
        secret_file=args.secret_file,
        reporter=reporter,
        connect_timeout=args.connect_timeout,
        io_timeout=args.io_timeout,
    )
    if args.json:
        print(json.dumps({"source": args.source, "size": size, "digest": digest}))
    else:
        print(f"{digest}  {args.source}")
    return 0


def _free_map(path: str) -> list[tuple[int, int]]:
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise InputError(f"--free-map {path}: {e.strerror}") from None
    except ValueError as e:
        raise InputError(f"--free-map {path}: not JSON: {e}") from None
    try:
        return [(int(offset), int(length)) for offset, length in data]
    except (ValueError, TypeError) as e:
        raise InputError(
            f"--free-map {path}: expected a JSON list of [offset, length]: {e}"
        ) from None

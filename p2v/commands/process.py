"""`p2v migrate-process`: move one running program to another Linux machine (CRIU)."""

from __future__ import annotations

import argparse
from typing import Any

from p2v.commands.options import (
    HelpLayout,
    add_schedule_options,
    run_or_resume,
    seconds,
)
from p2v.errors import EXIT_CODES, InputError


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "migrate-process",
        help="move a running program (a process tree) to another Linux machine, "
        "connections and all",
        description="Move PID (and its children), or the main process of the systemd unit "
        "--unit NAME, from the --from machine to the --to machine without restarting it: "
        "CRIU on the source dumps it, its images and the open files the destination lacks "
        "go over (digests checked), CRIU there restores it, and the source releases it "
        "only once it is restored there. Both machines are reached over SSH as root with "
        "your SSH set-up (keys, agent, ~/.ssh/config, known hosts) and need criu (with "
        "crit) and python3. --live copies the memory in passes while the program runs, so "
        "the final freeze is short; --keep-tcp takes its established TCP connections "
        "along, and --move-address moves the address its clients reach it at from the "
        "source's interface to the destination's, so a connected client carries on. "
        "Refused before anything is frozen: CRIU missing or `criu check` failing on either "
        "side, a terminal, a UNIX socket to a process outside the tree or (without "
        "--keep-tcp) an established connection, binaries that differ or are missing on "
        "the destination, its PIDs in use there, too little room for the images. A "
        "failed restore, or a p2v that dies before the release, leaves the program "
        "running on the source, thawed. The move is a job in the journal: its passes, "
        "freeze time, bytes and outcome (`p2v show JOB`).",
        epilog=EXIT_CODES,
        formatter_class=HelpLayout,
    )
    p.add_argument("pid", nargs="?", type=_pid, metavar="PID",
                   help="the process to move, with its children")  # fmt: skip
    p.add_argument("--unit", metavar="NAME",
                   help="instead of PID: the main process of this systemd unit (the "
                   "source's systemd then stops the unit, not to start it again)")  # fmt: skip
    p.add_argument("--from", dest="source", metavar="ssh://[USER@]HOST[:PORT]",
                   help="the machine it runs on")  # fmt: skip
    p.add_argument("--to", dest="target", metavar="ssh://[USER@]HOST[:PORT]",
                   help="the machine to move it to")  # fmt: skip
    p.add_argument("--live", action="store_true",
                   help="copy its memory in passes while it runs (CRIU pre-dump with "
                   "memory tracking): the freeze holds only what changed since")  # fmt: skip
    p.add_argument("--keep-tcp", action="store_true",
                   help="take its established TCP connections along (CRIU "
                   "--tcp-established); give --move-address for the address they use")  # fmt: skip
    p.add_argument("--move-address", metavar="ADDRESS",
                   help="the address its clients reach it at: taken off the source's "
                   "interface while it is frozen, put on the destination's interface "
                   "toward it, then announced (gratuitous ARP)")  # fmt: skip
    p.add_argument("--ssh-config", metavar="FILE", help="an ssh_config file to use (ssh -F)")
    p.add_argument("-i", "--identity", metavar="FILE", help="the SSH private key (ssh -i)")
    p.add_argument("--connect-timeout", type=seconds, default=10.0, metavar="SECONDS",
                   help="time limit of an SSH connection (default 10)")  # fmt: skip
    p.add_argument("--timeout", type=seconds, default=600.0, metavar="SECONDS",
                   help="time limit of each pass, copy and restore (default 600)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.add_argument("--resume", metavar="JOB", help="go on with a move that stopped")
    p.set_defaults(func=_cmd)
    add_schedule_options(p, _request)


def _pid(text: str) -> int:
    if not text.isdigit() or int(text) < 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not a process ID")
    return int(text)


def _request(args: argparse.Namespace) -> Any:
    from p2v.process.job import Request
    from p2v.process.plan import parse_address

    if (args.pid is None) == (args.unit is None):
        raise InputError("migrate-process needs a PID or --unit NAME (one of them)")
    if not args.source or not args.target:
        raise InputError("migrate-process needs --from ssh://HOST and --to ssh://HOST")
    if args.move_address:
        parse_address(args.move_address)
    for given, path in (("--ssh-config", args.ssh_config), ("-i", args.identity)):
        if path:
            try:
                open(path).close()
            except OSError as error:
                raise InputError(f"{given} {path}: {error.strerror}") from None
    return Request(source=args.source, target=args.target, pid=args.pid, unit=args.unit,
                   live=args.live, keep_tcp=args.keep_tcp, move_address=args.move_address,
                   ssh_config=args.ssh_config, identity=args.identity,
                   connect_timeout=args.connect_timeout, timeout=args.timeout)  # fmt: skip


def _cmd(args: argparse.Namespace) -> int:
    from p2v.process import job

    if args.resume and (args.pid or args.unit or args.source or args.target):
        raise InputError("--resume JOB takes the job's own process and machines; give it alone")
    return run_or_resume(args, job, None if args.resume else _request(args))

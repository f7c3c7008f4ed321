"""`p2v golden seal SOURCE --to IMAGE`, `p2v golden list`: golden images for clones."""

from __future__ import annotations

import argparse
import collections
import json
from typing import Any

from p2v.commands.options import (
    HelpLayout,
    add_connect_timeout_option,
    job_reporter,
    say,
)
from p2v.errors import EXIT_CODES, InputError
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT

ACTIONS = ("seal", "list")


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "golden",
        help="seal a golden image to clone from; list the goldens and their versions",
        description="`golden seal SOURCE --to IMAGE` makes a golden image once: SOURCE "
        "(an image file, or with -c a shut-off VM with one disk, on any host) is copied "
        "to IMAGE (qcow2; SOURCE is only read), and the copy is sealed: what identifies "
        "the machine is removed (virt-sysprep: machine-id, which also gives each clone a "
        "new DHCP DUID, SSH host keys, DHCP leases, logs, shell histories, udev's "
        "persistent net rules), and then in one libguestfs appliance the MAC addresses "
        "bound in ifupdown, netplan, systemd-networkd, NetworkManager and udev "
        "configuration and the random seeds; each clone takes a new identity at its first "
        "boot (cloud-init where the image has it, else a small first-boot unit that "
        "reads the clone's hostname and NIC names from its domain's SMBIOS strings). "
        "The golden's digest and version are recorded and IMAGE is made read-only. "
        "`golden list` shows every golden sealed, with its version, digest and the clones "
        "made of it on each host (as recorded: `p2v clones check` reads them). Each seal "
        "is a job (`p2v history`); one that stopped goes on with `golden --resume JOB`.",
        epilog=EXIT_CODES,
        formatter_class=HelpLayout,
    )
    p.add_argument("action", nargs="?", choices=ACTIONS, metavar="ACTION", help="seal or list")
    p.add_argument("source", nargs="?", metavar="SOURCE",
                   help="seal: an image file, or a VM's name with -c")  # fmt: skip
    p.add_argument("--to", metavar="IMAGE", help="seal: the golden image made (qcow2)")
    p.add_argument("-c", "--connect", metavar="URI",
                   help="seal: SOURCE is a VM on this libvirt host")  # fmt: skip
    p.add_argument("--name", help="seal: the golden's name (default: IMAGE's file name)")
    p.add_argument("--version", dest="golden_version", metavar="VERSION",
                   help="seal: its version (default: one more than the last of NAME)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the record, or the list, as JSON")
    p.add_argument("--resume", metavar="JOB", help="go on with a seal job that stopped")
    add_connect_timeout_option(p, DEFAULT_CONNECT_TIMEOUT)
    p.set_defaults(func=_cmd_golden)


def _cmd_golden(args: argparse.Namespace) -> int:
    from p2v.clone import golden
    from p2v.jobs.journal import Journal

    if args.resume:
        if args.action or args.source or args.to:
            raise InputError("--resume JOB takes the job's own source and image")
    elif args.action is None:
        raise InputError("golden needs an action: seal or list")
    elif args.action == "list":
        if args.source or args.to:
            raise InputError("golden list takes no SOURCE or --to")
        return _list(args)
    elif not args.source or not args.to:
        raise InputError("golden seal needs SOURCE and --to IMAGE")
    journal = Journal()
    try:
        if args.resume:
            job_id, record = golden.resume(args.resume, journal, say, job_reporter(args))
        else:
            request = golden.Request(
                source=args.source, to=args.to, uri=args.connect, name=args.name,
                version=args.golden_version, connect_timeout=args.connect_timeout,
            )  # fmt: skip
            job_id, record = golden.run(request, journal, say, job_reporter(args))
    finally:
        journal.close()
    if args.json:
        print(json.dumps({"job": job_id, **record}))
    else:
        print(f"golden {record['name']} version {record['version']} sealed at "
              f"{record['path']} ({record['os']}, first boot: {record['first_boot']}): "
              f"{record['digest']}")  # fmt: skip
    return 0


def _list(args: argparse.Namespace) -> int:
    from p2v.clone import golden
    from p2v.jobs.journal import Journal
    from p2v.units import format_time

    journal = Journal()
    try:
        rows = golden.goldens(journal)
    finally:
        journal.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no golden image sealed yet (`p2v golden seal SOURCE --to IMAGE`)")
        return 0
    print(f"{'NAME':<16} {'VERSION':<8} {'SEALED':<19} {'OS':<12} IMAGE")
    for row in rows:
        gone = "" if row["present"] else "  (gone)"
        print(f"{row['name']:<16} {row['version']:<8} {format_time(row['sealed']):<19} "
              f"{row['os'] or '?':<12} {row['path']}{gone}\n{'':<16} {row['digest']}")  # fmt: skip
        hosts = collections.Counter(c["uri"] for c in row["clones"])
        made = ", ".join(f"{n} on {uri}" for uri, n in hosts.items()) or "none yet"
        print(f"{'':<16} clones: {made}")
    return 0

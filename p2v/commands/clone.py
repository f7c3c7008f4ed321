"""`p2v clone SOURCE --name web-{n} --count N -c URI...`: clones from a golden image
or a VM, each with its own identity, spread over hosts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from p2v.commands.options import (
    HelpLayout,
    add_connect_timeout_option,
    count,
    job_reporter,
    port,
    say,
)
from p2v.errors import EXIT_CODES, InputError
from p2v.host.virt import DEFAULT_URI
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT
from p2v.transfer.endpoints.export import DEFAULT_NBD_PORT


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "clone",
        help="make clones of a golden image or a VM, each with its own identity, on one or "
        "more hosts",
        description="Makes --count clones of SOURCE (a golden's name from `p2v golden list`, its "
        "newest version, or its image; or a VM on one of the hosts or on --from URI: shut"
        " off, or running with --live, its disk then taken at one instant while it runs "
        "on; its golden is sealed from that disk first, unless --personalize none) named "
        "after --name (web-{n}: web-1, web-2, ...; {n:03d} pads). Linked clones (the "
        "default) are qcow2 overlays over one read-only copy of the golden per host, made"
        " once and reused by later clones; --full makes independent copies (by each host,"
        " from that copy). -c/--connect, given more than once, spreads the clones over "
        "the hosts (--spread round-robin, or memory: each to the host with the most free "
        "memory). Each clone has its own UUID and MAC addresses, and its hostname and NIC"
        " names travel in its domain's SMBIOS table: the golden's first-boot unit (or "
        "cloud-init's NoCloud) gives it its own hostname, SSH host keys and machine-id at"
        " its first boot, with no appliance (or --personalize offline writes them "
        "before). Everything that would be refused is refused before anything is made: a "
        "name a host has already, an address pool too small, a host without room, a "
        "golden not sealed (unless --personalize none). The bulk clone is one job with "
        "one child job per clone: after a crash, `clone --resume JOB` finishes it with "
        "exactly N clones, none twice, none half-made.",
        epilog=EXIT_CODES,
        formatter_class=HelpLayout,
    )
    p.add_argument("source", nargs="?", metavar="SOURCE",
                   help="a golden's name, an image, or a VM (on one of the hosts, or "
                   "--from)")  # fmt: skip
    p.add_argument("--name", dest="pattern", metavar="PATTERN",
                   help="the clones' names and hostnames: web-{n}, db-{n:02d}")  # fmt: skip
    p.add_argument("--count", type=count, default=1, metavar="N", help="how many (default 1)")
    p.add_argument("-c", "--connect", action="append", metavar="URI",
                   help=f"a host to clone onto; again for more (default "
                   f"{DEFAULT_URI})")  # fmt: skip
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--linked", dest="full", action="store_false",
                      help="copy-on-write overlays over a shared base (the default)")  # fmt: skip
    kind.add_argument("--full", dest="full", action="store_true",
                      help="independent copies of the golden")  # fmt: skip
    p.add_argument("--personalize", choices=("first-boot", "offline", "none"),
                   default="first-boot",
                   help="first-boot: each clone becomes itself at its first boot, from its "
                   "SMBIOS table (default); offline: its identity (hostname, machine-id, "
                   "SSH host keys, NIC names) is written into its disk before it is "
                   "uploaded, up to 255 clones per libguestfs appliance (linked clones of "
                   "a golden whose root is a partition); none: clones keep the image as it "
                   "is")  # fmt: skip
    p.add_argument("--spread", choices=("round-robin", "memory"), default="round-robin",
                   help="how clones are shared out over the hosts")  # fmt: skip
    p.add_argument("--ip-pool", metavar="CIDR",
                   help="give each clone an address from this network (in its SMBIOS "
                   "table; written into ifupdown's configuration with --personalize "
                   "offline)")  # fmt: skip
    p.add_argument("--memory", type=count, metavar="MiB",
                   help="each clone's memory (default: the source VM's, else 1024)")  # fmt: skip
    p.add_argument("--vcpus", type=count, metavar="N",
                   help="each clone's vCPUs (default: the source VM's, else 1)")  # fmt: skip
    p.add_argument("--from", dest="source_uri", metavar="URI",
                   help="the host of the VM SOURCE, when it is not one of the hosts the "
                   "clones go to (default: found on those)")  # fmt: skip
    p.add_argument("--live", action="store_true",
                   help="SOURCE is a running VM: its disk is taken as it is at one instant "
                   "(its filesystems frozen for it when it has a guest agent) while it "
                   "runs on; the clones boot from it")  # fmt: skip
    p.add_argument("--tls-certs", metavar="DIR",
                   help="--live from another host: ca-cert.pem, client-cert.pem and "
                   "client-key.pem to read the VM's disk over TLS")  # fmt: skip
    p.add_argument("--nbd-port", type=port, default=DEFAULT_NBD_PORT, metavar="PORT",
                   help="--live from another host: its export listens on this port of the "
                   "host's address (default 10809)")  # fmt: skip
    p.add_argument("--network", default="network:default", metavar="NET",
                   help="how the clones' NICs connect: network:NAME, bridge:NAME or user "
                   "(default network:default)")  # fmt: skip
    p.add_argument("--pool", default="default", metavar="POOL",
                   help="the storage pool of the base and the clones' disks on each "
                   "host")  # fmt: skip
    p.add_argument("--start", action="store_true", help="start the clones once made")
    p.add_argument("--wave", type=count, default=10, metavar="N",
                   help="--start: start N at a time, 20 s apart (default 10)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.add_argument("--resume", metavar="JOB", help="go on with a clone job that stopped")
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)  # tests: the same identities
    add_connect_timeout_option(p, DEFAULT_CONNECT_TIMEOUT)
    p.set_defaults(func=_cmd_clone, full=False)


def _cmd_clone(args: argparse.Namespace) -> int:
    from p2v.clone import job
    from p2v.jobs.journal import Journal

    if args.resume:
        if args.source or args.pattern:
            raise InputError("--resume JOB takes the job's own golden, names and hosts")
    elif not args.source or not args.pattern:
        raise InputError("clone needs SOURCE and --name PATTERN (or --resume JOB)")
    if args.network != "user" and args.network.partition(":")[0] not in ("network", "bridge"):
        raise InputError(f"--network {args.network}: use network:NAME, bridge:NAME or user")
    journal = Journal()
    try:
        if args.resume:
            job_id, record = job.resume(args.resume, journal, say, job_reporter(args))
        else:
            request = job.Request(
                source=args.source, pattern=args.pattern, count=args.count,
                uris=args.connect or [DEFAULT_URI], full=args.full,
                personalize=args.personalize, policy=args.spread, ip_pool=args.ip_pool,
                memory_mib=args.memory, vcpus=args.vcpus, network=args.network,
                pool=args.pool, start=args.start, wave=args.wave,
                connect_timeout=args.connect_timeout, seed=args.seed, live=args.live,
                source_uri=args.source_uri, tls_certs=args.tls_certs, nbd_port=args.nbd_port,
            )  # fmt: skip
            job_id, record = job.run(request, journal, say, job_reporter(args))
    finally:
        journal.close()
    if args.json:
        print(json.dumps({"job": job_id, **record}))
    else:
        for clone in record["clones"]:
            print(f"{clone['name']:<20} {clone['uri']:<32} {','.join(clone['macs'])}")
        print(f"job {job_id}: {len(record['clones'])} clones of {record['golden']['name']} "
              f"v{record['golden']['version']}")  # fmt: skip
    return 0


def register_check(verbs: Any) -> None:
    p = verbs.add_parser(
        "clones",
        help="check that every clone of a golden has its own identity",
        description="`clones check [GOLDEN]` reads each clone's identity from its own disk "
        "(its overlay, downloaded through its host's libvirt, read over the local golden "
        "in one libguestfs appliance for up to 255 clones) and its domain: name, host, "
        "MAC addresses, SMBIOS UUID, hostname, machine-id, DHCPv6 DUID (where a client "
        "stores one; systemd-networkd's comes from the machine-id), SSH host-key "
        "fingerprints and address. It reports every value two clones share and every "
        "value a clone still shares with its golden (exit code 12). A clone that has not "
        "booted yet has no machine-id or host keys: nothing to share.",
        epilog=EXIT_CODES,
        formatter_class=HelpLayout,
    )
    p.add_argument("action", choices=("check",), metavar="check")
    p.add_argument("golden", nargs="?", metavar="GOLDEN",
                   help="a golden's name or image (default: every golden's clones)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    add_connect_timeout_option(p, DEFAULT_CONNECT_TIMEOUT)
    p.set_defaults(func=_cmd_clones)


def _cmd_clones(args: argparse.Namespace) -> int:
    from p2v.clone import inventory
    from p2v.errors import IdentityClash
    from p2v.jobs.journal import Journal

    journal = Journal()
    try:
        groups = inventory.check(journal, args.golden, args.connect_timeout)
    finally:
        journal.close()
    if args.json:
        print(json.dumps(groups, indent=2))
    elif not groups:
        print("no clones recorded" + (f" of {args.golden}" if args.golden else ""))
    for group in [] if args.json else groups:
        golden = group["golden"]
        print(f"golden {golden.get('name')} v{golden.get('version')} ({golden.get('path')})")
        print(f"  {'NAME':<14} {'HOSTNAME':<14} {'MACHINE-ID':<13} {'SSH KEY':<14} "
              f"{'MAC':<18} HOST")  # fmt: skip
        for seen in group["clones"]:
            key = (seen["ssh_keys"] or ["-"])[0][:13]
            print(f"  {seen['name']:<14} {seen['hostname'] or '-':<14} "
                  f"{(seen['machine_id'] or '-')[:12]:<13} {key:<14} "
                  f"{','.join(seen['macs']) or '-':<18} {seen['uri']}"
                  + (f"  ({seen['error']})" if seen["error"] else "")
                  + ("  (not booted yet)" if seen["pending"] and not seen["error"]
                     else ""))  # fmt: skip
        for clash in group["clashes"]:
            print(f"  CLASH: {clash}")
    if any(g["clashes"] for g in groups):
        return IdentityClash.exit_code
    return 0

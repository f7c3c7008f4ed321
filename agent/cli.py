"""`p2v-agent`: inventory of this machine, and the authenticated read-only disk export."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from agent import __version__
from agent.protocol import (
    DEFAULT_PORT,
    Address,
    SecretError,
    fingerprint,
    generate_secret,
    normalize_secret,
    read_secret_file,
)


class AgentError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2v-agent",
        description="Runs on the physical server booted from the agent ISO: reports the "
        "machine's hardware and serves its disks, read-only, to the conversion host "
        "that holds the secret.",
    )
    parser.add_argument("--version", action="version", version=f"p2v-agent {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser(
        "inventory",
        help="print this machine's hardware",
        description="CPU, memory, firmware, SMBIOS identity, disks with partitions, "
        "filesystems, LVM and md-raid, NICs and PCI devices. Values that cannot be read "
        "are left unknown and listed at the end.",
    )
    p.add_argument("--json", action="store_true", help="print the inventory record as JSON")
    p.add_argument(
        "--disk",
        action="append",
        metavar="DEV",
        help="look only at this disk (kernel name or /dev path; repeatable; loop devices "
        "allowed); default: every disk of the machine",
    )
    p.set_defaults(func=_cmd_inventory)

    p = verbs.add_parser(
        "serve",
        help="serve the inventory and the disks, read-only, to the holder of the secret",
        description="Serve the inventory and each disk as read-only NBD exports over one "
        "TCP port, with TLS and a pre-shared secret. Without --secret-file a random secret "
        "is made and shown here, for the operator to give to the conversion host "
        "(`p2v inventory --agent HOST --secret-file F`). Runs until interrupted.",
    )
    p.add_argument(
        "--listen",
        default=f"0.0.0.0:{DEFAULT_PORT}",
        metavar="ADDR[:PORT]",
        help=f"address and port to listen on (default 0.0.0.0:{DEFAULT_PORT})",
    )
    p.add_argument(
        "--secret-file",
        metavar="F",
        help="file holding the secret (32 or more hex digits), for unattended use",
    )
    p.add_argument(
        "--disk",
        action="append",
        metavar="DEV",
        help="serve only this disk (repeatable); default: every disk but the live medium",
    )
    p.set_defaults(func=_cmd_serve)

    p = verbs.add_parser(
        "secret",
        help="print a new random secret",
        description="Print a new random secret (128 bits, hex digits in groups of four) "
        "for a job ISO (`make job-iso SECRET_FILE=F`) or `serve --secret-file F`.",
    )
    p.set_defaults(func=_cmd_secret)

    p = verbs.add_parser(
        "live",
        help="main program of the agent's boot medium (started by its init)",
        description="Read the p2v.* and ip= options of the kernel command line, bring up "
        "the network, serve every disk but the boot medium and show on each console how "
        "to reach them. Options: boot-iso/README.md.",
    )
    p.set_defaults(func=_cmd_live)
    return parser


def _disk_names(devices: list[str] | None) -> list[str] | None:
    if devices is None:
        return None
    return [d.removeprefix("/dev/") for d in devices]


def _cmd_inventory(args: argparse.Namespace) -> int:
    from agent.inventory.collect import collect
    from agent.inventory.report import format_inventory

    inventory = collect(disks=_disk_names(args.disk))
    print(inventory.to_json() if args.json else format_inventory(inventory))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from agent.inventory.collect import collect
    from agent.serve import ExportServer, ServeError, exportable_disks

    try:
        listen = Address.parse(args.listen, default_host="0.0.0.0")
    except ValueError as e:
        raise AgentError(f"--listen {args.listen}: {e}") from None
    try:
        key = read_secret_file(args.secret_file) if args.secret_file else None
    except SecretError as e:
        raise AgentError(str(e)) from None
    names = _disk_names(args.disk)
    inventory = collect(disks=names)
    try:
        disks = exportable_disks(inventory, names)
    except ServeError as e:
        raise AgentError(str(e)) from None
    generated = key is None
    key = key or normalize_secret(generate_secret())
    server = ExportServer(inventory, disks, key, listen, on_event=_event)
    signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C: restore, clean up
    try:
        try:
            server.start()
        except (ServeError, OSError) as e:
            raise AgentError(str(e)) from None
        print(f"p2v-agent {__version__} listening on {listen} (NBD with TLS-PSK)")
        print(f"exports: inventory, {', '.join(disks) or '(no disks)'}")
        print(f"secret fingerprint: {fingerprint(key)}")
        if generated:
            # Shown on this console only: the operator types it on the conversion host.
            grouped = "-".join(key[i : i + 4] for i in range(0, len(key), 4))
            print(f"secret: {grouped}")
        sys.stdout.flush()
        status = server.wait()
    except KeyboardInterrupt:
        status = 0
    finally:
        server.stop()
    if status not in (0, -signal.SIGTERM):
        raise AgentError(f"nbdkit stopped with status {status}")
    return 0


def _cmd_secret(args: argparse.Namespace) -> int:
    print(generate_secret())
    return 0


def _cmd_live(args: argparse.Namespace) -> int:
    from agent.live.main import run

    return run()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _event(message: str) -> None:
    print(f"p2v-agent: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except AgentError as e:
        print(f"p2v-agent: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

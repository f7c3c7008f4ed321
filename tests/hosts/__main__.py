"""python -m tests.hosts up NAME... | down [NAME...] | list"""

from __future__ import annotations

import argparse
import sys

from tests import hosts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.hosts",
        description="Make or remove test libvirt hosts (namespaces on this machine; needs root).",
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", help="make hosts; prints NAME URI ADDRESS for each")
    up.add_argument("names", nargs="+", metavar="NAME")
    down = verbs.add_parser("down", help="remove hosts (all of them without names)")
    down.add_argument("names", nargs="*", metavar="NAME")
    verbs.add_parser("list", help="print NAME URI ADDRESS of each host up")
    args = parser.parse_args(argv)
    try:
        if args.verb == "up":
            for host in hosts.up(args.names):
                print(host.line())
        elif args.verb == "down":
            for name in hosts.down(args.names or None):
                print(f"{name} removed")
        else:
            for host in hosts.known():
                print(host.line())
    except (RuntimeError, ValueError, PermissionError) as error:
        print(f"tests.hosts: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

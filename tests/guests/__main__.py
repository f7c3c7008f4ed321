"""python -m tests.guests start|counter|stop --host URI --name NAME"""

from __future__ import annotations

import argparse
import sys

from p2v.errors import P2VError
from tests import guests
from tests.fixtures.builder import BuildError
from tests.fixtures.vmguest import WORKLOADS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.guests",
        description="Start, read or remove the test guest on a test host (libvirt URI).",
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    start = verbs.add_parser("start", help="upload, define and start it; prints its name")
    counter = verbs.add_parser("counter", help="print the counter its console shows now")
    stop = verbs.add_parser("stop", help="destroy and undefine it, delete its volume")
    for verb in (start, counter, stop):
        verb.add_argument("--host", required=True, metavar="URI", help="libvirt URI")
        verb.add_argument("--name", required=True, help="the domain's name")
    start.add_argument("--workload", choices=WORKLOADS, default="idle")
    start.add_argument("--memory", type=int, metavar="MiB", help="default: 256, hot 384")
    start.add_argument(
        "--ip", metavar="ADDRESS[/PREFIX]", help="its address on the host's bridge br0 (/24 if "
        "no prefix); without it, the guest has no NIC"
    )  # fmt: skip
    start.add_argument("--gw", metavar="ADDRESS", help="default: 10.253.0.1 on the test subnet")
    start.add_argument("--timeout", type=float, default=guests.START_TIMEOUT, metavar="S")
    start.add_argument("--uefi", action="store_true", help="boot it with OVMF, not SeaBIOS")
    start.add_argument("--agent", action="store_true",
                       help="with the guest agent's channel: qemu-ga runs in it")  # fmt: skip
    counter.add_argument("--timeout", type=float, default=guests.COUNTER_TIMEOUT, metavar="S")
    args = parser.parse_args(argv)
    try:
        if args.verb == "start":
            settings = guests.settings_for(args.workload, args.ip, args.gw)
            guests.start(args.host, args.name, settings, args.memory, args.timeout,
                         uefi=args.uefi, agent=args.agent)  # fmt: skip
            print(args.name)
        elif args.verb == "counter":
            print(guests.counter(args.host, args.name, args.timeout))
        else:
            guests.stop(args.host, args.name)
    except P2VError as error:
        print(f"tests.guests: {error}", file=sys.stderr)
        return error.exit_code
    except (BuildError, ValueError) as error:
        print(f"tests.guests: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`p2v`: the command line of the conversion host."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence

from p2v import __version__
from p2v.commands import (
    agents,
    backup,
    clone,
    convert,
    golden,
    history,
    inventory,
    migrate,
    process,
    schedule,
    snapshot,
    transfer,
)
from p2v.commands.options import HelpLayout
from p2v.errors import EXIT_CODES, INTERRUPTED, P2VError, system_error
from p2v.host.virt import DEFAULT_URI  # libvirt itself loads only on connect


def _cmd_doctor(args: argparse.Namespace) -> int:
    from p2v import accel, doctor

    checks = doctor.run_checks(args.connect, with_appliance=not args.no_appliance)
    healthy = all(check.ok for check in checks)
    if args.json:
        decision = accel.detect() if checks[0].ok else None
        print(
            json.dumps(
                {
                    "ok": healthy,
                    "accelerator": (
                        {"accel": decision.accel, "reason": decision.reason} if decision else None
                    ),
                    "checks": [check.to_dict() for check in checks],
                },
                indent=2,
            )
        )
    else:
        width = max(len(check.component) for check in checks)
        for check in checks:
            mark = "ok  " if check.ok else "FAIL"
            print(f"{mark} {check.component:<{width}}  {check.detail}")
            if check.fix:
                print(f"     {'':<{width}}  fix: {check.fix}")
    return 0 if healthy else 1


class VerbParser(argparse.ArgumentParser):
    """A verb's parser: options go before, between or after its positional arguments
    (`p2v copy SRC --json DST`), as cp, rsync and virsh take them."""

    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # argparse's intermixed parsing calls this method again for each of its passes.
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2v",
        description="Turn physical Linux servers into KVM virtual machines.",
        epilog=EXIT_CODES,
        formatter_class=HelpLayout,
    )
    parser.add_argument("--version", action="version", version=f"p2v {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    verbs = parser.add_subparsers(
        dest="verb", metavar="VERB", required=True, parser_class=VerbParser
    )

    p = verbs.add_parser(
        "doctor",
        help="check that this host can run conversions",
        description="Check each component the toolkit needs (QEMU, accelerator, libguestfs, "
        "libvirt, libnbd, nbdkit, state directory); exit non-zero if one is missing or broken.",
    )
    p.add_argument(
        "-c",
        "--connect",
        default=DEFAULT_URI,
        metavar="URI",
        help=f"libvirt URI to check (default {DEFAULT_URI})",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--no-appliance",
        action="store_true",
        help="skip launching a libguestfs appliance (the slowest check)",
    )
    p.set_defaults(func=_cmd_doctor)
    transfer.register(verbs)
    inventory.register(verbs)
    agents.register(verbs)
    convert.register(verbs)
    migrate.register(verbs)
    process.register(verbs)
    snapshot.register(verbs)
    backup.register(verbs)
    golden.register(verbs)
    clone.register(verbs)
    clone.register_check(verbs)
    history.register(verbs)
    schedule.register(verbs)
    for verb in verbs.choices.values():
        # --debug after the verb too; SUPPRESS keeps a --debug before it from being reset.
        verb.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show tracebacks and debug logs")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # `p2v history | head`: stop quietly when the reader goes away.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # SIGINT stops a job where it can go on from (`p2v migrate --cancel`, the
    # scheduler's --run-timeout, Ctrl-C); one started in the background of a script
    # inherits it ignored, and would run on.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        try:
            if schedule.requested(args):
                return schedule.record(parser, args, list(sys.argv[1:] if argv is None else argv))
            return int(args.func(args))
        except OSError as error:
            raise system_error(error) from error
    except P2VError as error:
        if args.debug:
            raise
        go_on = f"; resume with `{error.resume}`" if error.resume else ""
        print(f"p2v: error: {error}{go_on}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("p2v: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

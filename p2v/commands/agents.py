"""`p2v agents --listen`: wait for agents in unattended mode to announce themselves."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from agent.protocol import ANNOUNCE_PORT
from p2v.commands.options import add_connect_timeout_option, count, seconds
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "agents",
        help="wait for agents booted with p2v.server= to announce themselves",
        description="Listen for announcements of agents booted in unattended mode "
        "(kernel option p2v.server=THIS_HOST). Each one is verified by connecting back "
        "with the secret and reading its inventory, then printed: one line per agent, "
        "or one JSON object per line with --json, ready for `p2v convert --agent`.",
    )
    p.add_argument(
        "--listen",
        default=f"0.0.0.0:{ANNOUNCE_PORT}",
        metavar="[ADDR][:PORT]",
        help=f"where to listen (default 0.0.0.0:{ANNOUNCE_PORT})",
    )
    p.add_argument(
        "--secret-file", required=True, metavar="F", help="the agents' secret (the job's)"
    )
    p.add_argument("--count", type=count, metavar="N", help="stop after N agents (default: never)")
    p.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        help="give up after this long (default: never)",
    )
    add_connect_timeout_option(p, DEFAULT_CONNECT_TIMEOUT)
    p.add_argument("--json", action="store_true", help="print each agent as a JSON line")
    p.set_defaults(func=_cmd_agents)


def _cmd_agents(args: argparse.Namespace) -> int:
    from agent.protocol import Address, SecretError, read_secret_file
    from p2v.errors import InputError, P2VError
    from p2v.host.announcements import AnnouncementListener, VerifiedAgent

    try:
        listen = Address.parse(args.listen, default_host="0.0.0.0", default_port=ANNOUNCE_PORT)
    except ValueError as e:
        raise InputError(f"--listen {e}") from None
    try:
        read_secret_file(args.secret_file)  # now, not when the first agent calls
    except SecretError as e:
        raise InputError(str(e)) from None
    deadline = time.monotonic() + args.timeout if args.timeout else None
    found = 0
    with AnnouncementListener(listen, args.secret_file, args.connect_timeout) as listener:
        print(f"p2v: waiting for agents on {listen}", file=sys.stderr, flush=True)
        while args.count is None or found < args.count:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                wanted = f" of {args.count}" if args.count else ""
                raise P2VError(f"{found}{wanted} agents announced themselves in {args.timeout} s")
            result = listener.next(left)
            if isinstance(result, VerifiedAgent):
                found += 1
                print(json.dumps(result.to_json()) if args.json else result.describe(), flush=True)
            elif isinstance(result, str):
                print(f"p2v: {result}", file=sys.stderr, flush=True)
    return 0

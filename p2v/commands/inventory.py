"""`p2v inventory`: the hardware of a server running the agent."""

from __future__ import annotations

import argparse
from typing import Any

from p2v.commands.options import add_connect_timeout_option
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT


def register(verbs: Any) -> None:
    p = verbs.add_parser(
        "inventory",
        help="show the hardware of a server running p2v-agent",
        description="Fetch the inventory from `p2v-agent serve` (TLS with the agent's "
        "secret) and print it: machine, firmware, CPU, memory, disks, partitions, "
        "filesystems, LVM, md-raid, NICs, PCI devices.",
    )
    p.add_argument("--agent", required=True, metavar="HOST[:PORT]", help="where the agent runs")
    p.add_argument("--secret-file", metavar="F", help="file holding the agent's secret")
    add_connect_timeout_option(p, DEFAULT_CONNECT_TIMEOUT)
    p.add_argument("--json", action="store_true", help="print the inventory record as JSON")
    p.set_defaults(func=_cmd_inventory)


def _cmd_inventory(args: argparse.Namespace) -> int:
    from agent.inventory.report import format_inventory
    from p2v.host.agentclient import AgentSession, agent_address

    address = agent_address(args.agent)
    with AgentSession(address, args.secret_file, args.connect_timeout) as session:
        inventory = session.inventory()
    print(inventory.to_json() if args.json else format_inventory(inventory))
    return 0

"""Unattended mode: tell a conversion host that this agent is ready (`p2v.server=`).

The announcement is one JSON line sent over TCP: where the agent listens, what the
machine is, and the secret's fingerprint, never the secret. It proves nothing by
itself: the conversion host checks it by connecting back with the secret it holds,
which only the real agent accepts (TLS-PSK authenticates both sides).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable

from agent.inventory.model import Inventory
from agent.protocol import ANNOUNCE_VERSION, Address

RETRY_SECONDS = 10.0
REPEAT_SECONDS = 300.0  # announced again now and then, should the host have restarted


def announcement(inventory: Inventory, port: int, exported: list[str], fingerprint: str) -> bytes:
    record = {
        "p2v_agent_announce": ANNOUNCE_VERSION,
        "port": port,
        "fingerprint": fingerprint,
        "serial": inventory.machine.serial,
        "uuid": inventory.machine.uuid,
        "vendor": inventory.machine.vendor,
        "product": inventory.machine.product,
        "disks": exported,
        "addresses": {nic.name: nic.addresses for nic in inventory.nics},
    }
    return (json.dumps(record) + "\n").encode()


def send(server: Address, message: bytes, timeout: float = 10.0) -> str:
    """Deliver one announcement; returns the host's one-line answer."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        sock.sendall(message)
        sock.shutdown(socket.SHUT_WR)
        answer = sock.makefile("r", encoding="utf-8").readline(4096)
    return answer.strip()


def keep_announcing(
    server: Address, message: bytes, say: Callable[[str], None], stop: threading.Event
) -> None:
    """Announce until told to stop: retried while the host is unreachable, then repeated."""
    reported_failure = False
    while not stop.is_set():
        try:
            answer = send(server, message)
        except OSError as e:
            if not reported_failure:
                say(f"cannot reach the conversion host at {server} ({e}); retrying")
                reported_failure = True
            stop.wait(RETRY_SECONDS)
            continue
        say(f"announced to {server}: {answer or 'no answer'}")
        reported_failure = False
        stop.wait(REPEAT_SECONDS)

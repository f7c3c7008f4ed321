"""Connecting to an NBD server within time limits, and waiting on a command likewise.

libnbd's synchronous calls wait as long as the peer lets them: a server that accepts
the TCP connection and then says nothing (a NAT with no one behind it, another
service on the port, a firewall that drops packets) holds them forever. Here the
connection is made with libnbd's asynchronous calls and driven with a deadline for
each stage: the TCP connection, the handshake (the server's greeting, and TLS when
asked for), then the NBD negotiation (export, meta contexts). The stage is read from
libnbd's own state machine.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import nbd

CONNECT, HANDSHAKE, NEGOTIATION = "connection", "handshake", "negotiation"


class HandshakeTimeout(Exception):
    """A stage of a connection did not finish in time."""

    def __init__(self, stage: str, seconds: float, tls: bool) -> None:
        self.stage, self.seconds, self.tls = stage, seconds, tls
        what = {
            CONNECT: "the TCP connection was not accepted",
            HANDSHAKE: "the connection was accepted but the "
            + ("TLS handshake" if tls else "NBD handshake")
            + " did not complete",
            NEGOTIATION: "the NBD negotiation did not complete",
        }[stage]
        super().__init__(f"{what} within {seconds:g} s")


class CommandTimeout(Exception):
    """A command sent on a ready connection got no reply in time."""


def stage_of(state: str) -> str:
    """libnbd's state name ("MAGIC.RECV_MAGIC: ...") -> the stage it belongs to."""
    name = state.split(":", 1)[0]
    if name.startswith(("START", "CONNECT")):
        return CONNECT
    if name.startswith("NEWSTYLE.OPT_") and not name.startswith("NEWSTYLE.OPT_STARTTLS"):
        return NEGOTIATION
    if name.startswith(("MAGIC", "NEWSTYLE", "OLDSTYLE")):
        return HANDSHAKE  # the greeting, then STARTTLS and the TLS handshake
    return NEGOTIATION


def connect_within(h: Any, start: Callable[[Any], None], timeout: float) -> None:
    """Start a connection with an `aio_connect_*` call and drive it until the handle
    is ready, giving each stage `timeout` seconds. Raises nbd.Error when the server
    refuses, HandshakeTimeout when a stage takes too long (the handle is then of no
    further use)."""
    start(h)
    tls = bool(h.get_tls())  # after start: a URI sets it (nbds://)
    stage, since = CONNECT, time.monotonic()
    while not h.aio_is_ready():
        if h.aio_is_dead() or h.aio_is_closed():
            raise nbd.Error("the server closed the connection while connecting", 0)
        now = time.monotonic()
        current = stage_of(h.connection_state())
        if current != stage:
            stage, since = current, now
        left = since + timeout - now
        if left <= 0:
            raise HandshakeTimeout(stage, timeout, tls)
        _poll(h, left)


def disconnect(h: Any, timeout: float = 5.0) -> None:
    """Say goodbye to the server, without waiting on one that does not listen: the
    handle's connection is closed within `timeout` seconds, or simply dropped with the
    handle. (libnbd's shutdown waits as long as the server lets it.) Commands still
    in flight are abandoned: their replies are not waited for either."""
    with contextlib.suppress(nbd.Error):
        if not h.aio_is_ready() or h.aio_in_flight():
            return
        h.aio_disconnect(0)
        deadline = time.monotonic() + timeout
        while not (h.aio_is_closed() or h.aio_is_dead()) and time.monotonic() < deadline:
            h.poll(100)


def wait_for(h: Any, cookie: int, timeout: float, what: str) -> None:
    """Wait for one asynchronous command to complete; CommandTimeout after `timeout`
    seconds without a reply."""
    deadline = time.monotonic() + timeout
    while not h.aio_command_completed(cookie):
        left = deadline - time.monotonic()
        if left <= 0:
            raise CommandTimeout(f"no reply to {what} within {timeout:g} s")
        _poll(h, left)


def _poll(h: Any, left: float) -> None:
    """Let libnbd work for at most `left` seconds (and half a second at a time, so the
    caller looks at its deadline again)."""
    h.poll(max(1, int(min(left, 0.5) * 1000)))

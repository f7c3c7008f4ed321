"""What a domain prints on its serial console, read through the libvirt connection:
the same on this host and on another, and on whichever host the domain runs now."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from p2v.host.virt.connection import failing_as, libvirt_module


def read_console_until(
    conn: Any, domain: Any, done: Callable[[str], bool], timeout: float, poll: float = 0.1
) -> str:
    """The console's text from now until `done(text)` holds, the domain stops or
    `timeout` seconds pass, whichever comes first; the caller tells which."""
    libvirt = libvirt_module()
    name = domain.name()
    with failing_as(f", opening the console of {name}"):
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        # FORCE: a console left open by a client that died must not keep us out.
        domain.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    text = ""
    deadline = time.monotonic() + timeout
    try:
        while True:
            # A call each round: without an event loop, the remote driver takes in a
            # stream's data only while a call is under way.
            with failing_as(f", reading the state of {name}"):
                running = domain.isActive()
            text += _received(libvirt, stream)
            if done(text) or not running or time.monotonic() > deadline:
                return text
            time.sleep(poll)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()


def _received(libvirt: Any, stream: Any) -> str:
    """What arrived since the last call, without waiting."""
    data = b""
    while True:
        try:
            got = stream.recv(1 << 16)
        except libvirt.libvirtError:  # the domain stopped: its console closed
            break
        if isinstance(got, int) or not got:  # -2: nothing yet; b"": closed
            break
        data += got
    return data.decode(errors="replace")

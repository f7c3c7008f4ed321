"""A domain's serial console, read through the libvirt connection: the same on this
host and on another, and on whichever host the domain runs now."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from p2v.host.virt.connection import failing_as, libvirt_module


class Console:
    def __init__(self, conn: Any, domain: Any) -> None:
        libvirt = libvirt_module()
        with failing_as(f", opening the console of {domain.name()}"):
            self.stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            # FORCE: a console left open by a client that died must not keep us out.
            domain.openConsole(None, self.stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        self.text = ""

    def read(self) -> str:
        """Everything the console printed since it was opened (what is new is read now)."""
        libvirt = libvirt_module()
        while self.stream is not None:
            try:
                data = self.stream.recv(1 << 16)
            except libvirt.libvirtError:  # the domain stopped: its console closed
                self.close()
                break
            if isinstance(data, int) or not data:  # -2: nothing new yet; b"": closed
                break
            self.text += data.decode(errors="replace")
        return self.text

    def close(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            with contextlib.suppress(Exception):
                stream.abort()

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_console_until(
    conn: Any, domain: Any, done: Callable[[str], bool], timeout: float, poll: float = 0.1
) -> str:
    """The console's text from now until `done(text)` holds, the domain stops or
    `timeout` seconds pass, whichever comes first; the caller tells which."""
    deadline = time.monotonic() + timeout
    with Console(conn, domain) as console:
        while True:
            with failing_as(f", reading the state of {domain.name()}"):
                running = domain.isActive()
            text = console.read()
            if done(text) or not running or time.monotonic() > deadline:
                return text
            time.sleep(poll)

"""The one place that talks to libvirt: connections, and failures turned into P2VError."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

from p2v.errors import ComponentError, MissingComponent
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT

DEFAULT_URI = "qemu:///session"

# For root, libvirt serves qemu:///session from the privileged daemon's socket. On a
# host without systemd nothing starts that daemon on demand, so we do, the way an
# unprivileged session is autostarted: it exits by itself after IDLE_EXIT_S idle.
LOCAL_URIS = ("qemu:///session", "qemu:///system")
IDLE_EXIT_S = 600
DAEMON_START_S = 15


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError as error:
        raise MissingComponent("the libvirt Python binding", "install python3-libvirt") from error
    return libvirt


def connect(uri: str = DEFAULT_URI, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Any:
    """An open libvirt connection; a clear error when the URI does not answer, within
    `timeout` seconds."""
    libvirt = _libvirt()
    # libvirt prints its errors on stderr by default; ours carry the message instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        return _open_within(libvirt, uri, timeout)
    except libvirt.libvirtError as error:
        first_error = error
    if uri in LOCAL_URIS and os.geteuid() == 0:
        deadline = time.monotonic() + DAEMON_START_S
        while time.monotonic() < deadline:
            # Again each round: a daemon that was exiting (idle timeout) when we
            # first looked is gone now and must be started anew.
            _start_privileged_daemon()
            try:
                return libvirt.open(uri)
            except libvirt.libvirtError as error:
                first_error = error
                time.sleep(0.2)
    raise ComponentError(
        f"libvirt at {uri} does not answer: {first_error.get_error_message()}"
    ) from first_error


def _open_within(libvirt: Any, uri: str, timeout: float) -> Any:
    """libvirt.open has no time limit of its own: a remote host that drops the
    connection request holds it for minutes. It runs in a thread here, left behind
    when it takes too long (it holds nothing but its own socket)."""
    outcome: list[Any] = []

    def attempt() -> None:
        try:
            outcome.append(libvirt.open(uri))
        except BaseException as e:  # handed to the caller's thread
            outcome.append(e)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise ComponentError(f"libvirt at {uri} did not answer within {timeout:g} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


@contextlib.contextmanager
def _failing_as(what: str) -> Iterator[None]:
    """libvirt's errors, inside, become ComponentError saying what was being done."""
    libvirt = _libvirt()
    try:
        yield
    except libvirt.libvirtError as error:
        raise ComponentError(f"libvirt{what}: {error.get_error_message()}") from error


def lookup(conn: Any, name: str) -> Any:
    """The domain called `name`, or None."""
    libvirt = _libvirt()
    with _failing_as(""):
        try:
            return conn.lookupByName(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
    return None


def define(conn: Any, xml: str, replace: Any = None) -> None:
    """Define a domain, first undefining `replace` (a stopped domain) with its NVRAM,
    so that the new one starts from fresh firmware variables."""
    libvirt = _libvirt()
    with _failing_as(""):
        if replace is not None:
            replace.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        conn.defineXML(xml)


def start(domain: Any) -> None:
    with _failing_as(f", starting {domain.name()}"):
        domain.create()


def start_transient(conn: Any, xml: str) -> Any:
    """Start a domain that goes away when it stops or this connection closes."""
    libvirt = _libvirt()
    with _failing_as(", starting a guest"):
        return conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)


def destroy(domain: Any) -> None:
    """Stop a domain at once; one already gone is fine."""
    libvirt = _libvirt()
    with contextlib.suppress(libvirt.libvirtError):
        domain.destroy()


def version_string(conn: Any) -> str:
    v = conn.getLibVersion()
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


def domain_types(conn: Any, arch: str = "x86_64") -> set[str]:
    """Domain types (qemu, kvm) the connection offers for guests of `arch`."""
    caps = ET.fromstring(conn.getCapabilities())
    types: set[str] = set()
    for guest in caps.findall("guest"):
        node = guest.find("arch")
        if node is not None and node.get("name") == arch:
            types.update(d.get("type", "") for d in node.findall("domain"))
    return types - {""}


def _start_privileged_daemon() -> None:
    """Start virtlogd and libvirtd (idle-exiting) when running as root without systemd."""
    for daemon, args in (
        ("virtlogd", ["--daemon"]),
        ("libvirtd", ["--daemon", "--timeout", str(IDLE_EXIT_S)]),
    ):
        path = shutil.which(daemon) or f"/usr/sbin/{daemon}"
        if not os.path.exists(path):
            raise MissingComponent(daemon, "install libvirt-daemon-system")
        if subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode != 0:
            subprocess.run([path, *args], check=False, capture_output=True)

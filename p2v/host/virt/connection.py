"""Connections to libvirt hosts, and libvirt's failures turned into P2VError."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from p2v.errors import ComponentError, InputError, MissingComponent
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT

DEFAULT_URI = "qemu:///session"

# For root, libvirt serves qemu:///session from the privileged daemon's socket. On a
# host without systemd nothing starts that daemon on demand, so we do, the way an
# unprivileged session is autostarted: it exits by itself after IDLE_EXIT_S idle.
LOCAL_URIS = ("qemu:///session", "qemu:///system")
IDLE_EXIT_S = 600
# One that was exiting (idle) when we looked holds its PID file for up to ~30 s more
# (libvirtd's forced shutdown), and a new one then takes seconds to start.
DAEMON_START_S = 60
# A host that stops answering mid-call (its network gone) would hold the call for
# ever: libvirt's keepalive closes the connection after KEEPALIVE_S * (COUNT + 1) s
# without a reply, and the call fails.
KEEPALIVE_S, KEEPALIVE_COUNT = 5, 3
_events_lock = threading.Lock()
_events_running = False


def libvirt_module() -> Any:
    try:
        import libvirt
    except ImportError as error:
        raise MissingComponent("the libvirt Python binding", "install python3-libvirt") from error
    return libvirt


def connect(uri: str = DEFAULT_URI, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Any:
    """An open libvirt connection; a clear error when the URI does not answer, within
    `timeout` seconds, or refuses us."""
    libvirt = libvirt_module()
    # libvirt prints its errors on stderr by default; ours carry the message instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    _run_event_loop(libvirt)
    try:
        return _kept_alive(_open_within(libvirt, uri, timeout))
    except libvirt.libvirtError as error:
        first_error = error
    if uri in LOCAL_URIS and os.geteuid() == 0:
        deadline = time.monotonic() + DAEMON_START_S
        while time.monotonic() < deadline:
            # Again each round: a daemon that was exiting (idle timeout) when we
            # first looked is gone now and must be started anew.
            _start_privileged_daemon()
            try:
                return _kept_alive(libvirt.open(uri))
            except libvirt.libvirtError as error:
                first_error = error
                time.sleep(0.2)
    raise _open_error(libvirt, uri, first_error) from first_error


def _run_event_loop(libvirt: Any) -> None:
    """Keepalive needs libvirt's event loop running: one daemon thread runs it, set up
    before the first connection opens."""
    global _events_running
    with _events_lock:
        if _events_running:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _events_running = True


def _kept_alive(conn: Any) -> Any:
    libvirt = libvirt_module()
    try:
        conn.setKeepAlive(KEEPALIVE_S, KEEPALIVE_COUNT)
    except libvirt.libvirtError as error:
        # A driver in this process (test:///) has no daemon whose silence to watch.
        if error.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            conn.close()
            raise
    return conn


def _open_error(libvirt: Any, uri: str, error: Any) -> Exception:
    code, message = error.get_error_code(), error.get_error_message()
    if code in (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_CANCELLED):
        return InputError(f"libvirt at {uri} refused us: {message}; check the credentials")
    if code in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_ARG):
        return InputError(f"{uri}: not a libvirt URI this host can use: {message}")
    return ComponentError(f"libvirt at {uri} does not answer: {message}")


@contextlib.contextmanager
def connection(uri: str = DEFAULT_URI, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Iterator[Any]:
    """A libvirt connection for the time of the block."""
    conn = connect(uri, timeout)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):  # a host that went away: nothing to close
            conn.close()


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
def failing_as(what: str) -> Iterator[None]:
    """libvirt's errors, inside, become ComponentError saying what was being done."""
    libvirt = libvirt_module()
    try:
        yield
    except libvirt.libvirtError as error:
        raise ComponentError(f"libvirt{what}: {error.get_error_message()}") from error


@dataclass(frozen=True)
class HostIdentity:
    uri: str
    hostname: str
    uuid: str  # the host's own UUID: libvirt refuses to migrate between two equal ones
    version: str  # libvirt's


def identity(conn: Any) -> HostIdentity:
    """Who answers on `conn`: what tells one host from another."""
    with failing_as(", asking the host who it is"):
        caps = ET.fromstring(conn.getCapabilities())
        return HostIdentity(
            conn.getURI(), conn.getHostname(), caps.findtext("host/uuid", ""), version_string(conn)
        )


def version(conn: Any) -> tuple[int, int, int]:
    v = conn.getLibVersion()
    return v // 1_000_000, v // 1000 % 1000, v % 1000


def version_string(conn: Any) -> str:
    return ".".join(str(part) for part in version(conn))


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
    """Start virtlogd and libvirtd (idle-exiting) when running as root without systemd.
    One already running keeps its PID file locked, and the new one exits at once (a
    test host's daemons have PID files of their own, in their own /run)."""
    for daemon, args in (
        ("virtlogd", ["--daemon"]),
        ("libvirtd", ["--daemon", "--timeout", str(IDLE_EXIT_S)]),
    ):
        path = shutil.which(daemon) or f"/usr/sbin/{daemon}"
        if not os.path.exists(path):
            raise MissingComponent(daemon, "install libvirt-daemon-system")
        subprocess.run([path, *args], check=False, capture_output=True)


class Connections:
    """One open connection per host, made when first asked for and kept for the
    whole of a long operation (a bulk clone, a check of its clones): a few calls per
    machine would cost less than a connection each. A host that cannot be reached
    is tried again the next time it is asked for."""

    def __init__(self, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self.timeout = timeout
        self.open: dict[str, Any] = {}

    def __call__(self, uri: str) -> Any:
        if uri not in self.open:
            self.open[uri] = connect(uri, self.timeout)
        return self.open[uri]

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *_: object) -> None:
        for conn in self.open.values():
            with contextlib.suppress(Exception):
                conn.close()

"""The one place that talks to libvirt: connections, and failures turned into P2VError."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from typing import Any

from p2v.errors import ComponentError, MissingComponent

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


def connect(uri: str = DEFAULT_URI) -> Any:
    """An open libvirt connection; a clear error when the URI does not answer."""
    libvirt = _libvirt()
    # libvirt prints its errors on stderr by default; ours carry the message instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        return libvirt.open(uri)
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

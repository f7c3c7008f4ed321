"""Process-migration test nodes on test hosts (the procnode fixture as a guest).

A node is the fixture image uploaded as the volume NAME.qcow2 of the host's pool
`default` and defined as the domain NAME, one vCPU, on the host's bridge, its
settings in SMBIOS OEM strings. `start` returns once the node says it is ready
(sshd, and the counter service where it runs one, listening); every wait has a time
limit, and what went wrong names the node with the end of its console.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from p2v.host.virt import console as virt_console
from tests.fixtures import procnode
from tests.fixtures.procnode import build as procnode_build
from tests.fixtures.vmguest import Settings
from tests.guests import GuestError, _tail, upload_and_start
from tests.guests.domain import GuestSpec

START_TIMEOUT = 240.0


def ssh_config(path: Path) -> Path:
    """An ssh_config at `path` that logs in to any node as root with the key, checking
    its host key as a user's SSH would."""
    path.write_text(
        f"Host *\n  User root\n  IdentityFile {procnode_build.key_path()}\n"
        f"  UserKnownHostsFile {procnode_build.known_hosts()}\n"
        "  StrictHostKeyChecking yes\n  IdentitiesOnly yes\n"
    )
    return path


def domain_xml(name: str, settings: procnode.NodeSettings, disk: str, domain_type: str) -> str:
    """The test guest's domain (its disk, a NIC on the host's bridge, the serial
    console), with the node's settings as its OEM strings, a CPU model and a
    random-number device (sshd and CRIU want entropy early)."""
    spec = GuestSpec(name, Settings(ip=settings.ip), procnode.MEMORY_MIB, disk, domain_type)
    domain = ET.fromstring(spec.to_xml())
    oem = domain.find("sysinfo/oemStrings")
    assert oem is not None
    oem.clear()
    for entry in settings.oem_strings():
        ET.SubElement(oem, "entry").text = entry
    # CRIU restores a process on a CPU that has what the source's had: both nodes
    # get the same model.
    ET.SubElement(domain, "cpu", mode="custom", match="exact").append(
        ET.fromstring("<model fallback='forbid'>qemu64</model>")
    )
    devices = domain.find("devices")
    assert devices is not None
    ET.SubElement(devices, "rng", model="virtio").append(
        ET.fromstring("<backend model='random'>/dev/urandom</backend>")
    )
    return ET.tostring(domain, encoding="unicode")


def start(
    uri: str, name: str, settings: procnode.NodeSettings, timeout: float = START_TIMEOUT
) -> dict[str, str]:
    """Upload, define and start the node; its ready line's fields once it is ready. A
    node that does not get there is removed again, with its volume."""

    def ready(conn: Any, domain: Any) -> dict[str, str]:
        text = virt_console.read_console_until(
            conn, domain,
            lambda t: procnode.ready(t) is not None or procnode.failure(t) is not None,
            timeout,
        )  # fmt: skip
        if failed := procnode.failure(text):
            raise GuestError(f"{name} on {uri} failed: {failed}\n{_tail(text)}")
        if (fields := procnode.ready(text)) is None:
            raise GuestError(f"{name} on {uri}: not ready after {timeout:g} s\n{_tail(text)}")
        return fields

    def xml(disk: str, domain_type: str) -> str:
        return domain_xml(name, settings, disk, domain_type)

    fields = upload_and_start(uri, name, procnode_build.build(), xml, ready)
    assert fields is not None
    return fields

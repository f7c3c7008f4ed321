"""`p2v clones check`: each clone's identity read from its own disk, and what two
clones share or a clone still shares with its golden.

Only the clones' overlays cross the network: each is downloaded through its host's
libvirt and put back over the local golden (its base holds the same bytes), then
up to batch.MAX_DISKS of them are read in one libguestfs appliance, read-only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from p2v.clone import batch
from p2v.clone import golden as goldens
from p2v.clone.domain import identity_of
from p2v.clone.seal import FIRSTBOOT_DONE
from p2v.errors import ComponentError
from p2v.host import virt
from p2v.host.virt import storage
from p2v.host.virt.domainxml import DomainXml
from p2v.qemu import rebase_unsafe
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT

_DUID = re.compile(r'default-duid\s+"([^"]+)"')


@dataclass
class Seen:
    """One machine's identity as its disk and its domain tell it."""

    name: str
    uri: str | None
    uuid: str | None = None
    macs: list[str] = field(default_factory=list)
    hostname: str | None = None
    machine_id: str | None = None  # None: not booted since it was sealed (or no file)
    duid: str | None = None  # a DHCPv6 client's stored DUID; networkd's comes from machine-id
    ssh_keys: list[str] = field(default_factory=list)  # SHA256 fingerprints
    ip: str | None = None
    # Not booted since it was made: what its disk holds is still the golden's; its
    # hostname is the one its domain gives it for its first boot.
    pending: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fingerprint(public_key_line: str) -> str | None:
    """`ssh-keygen -l`'s SHA256 fingerprint of an OpenSSH public key line. Pure."""
    parts = public_key_line.split()
    if len(parts) < 2:
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        return None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def clashes(clones: list[Seen], golden: Seen) -> list[str]:
    """What two clones share, and what a clone still shares with its golden. Pure."""
    found: list[str] = []
    columns: dict[str, Any] = {
        "hostname": lambda s: [s.hostname], "machine-id": lambda s: [s.machine_id],
        "DHCP DUID": lambda s: [s.duid], "SSH host key": lambda s: s.ssh_keys,
        "MAC": lambda s: s.macs, "UUID": lambda s: [s.uuid], "IP": lambda s: [s.ip],
    }  # fmt: skip
    for column, values in columns.items():
        holders: dict[str, list[str]] = {}
        for seen in clones:
            for value in values(seen):
                if value:
                    holders.setdefault(value, []).append(seen.name)
        found += [f"{column} {v} is shared by {', '.join(n)}"
                  for v, n in holders.items() if len(n) > 1]  # fmt: skip
        golden_values = {v for v in values(golden) if v}
        found += [f"{column} {v} of {', '.join(n)} is the golden's"
                  for v, n in holders.items() if v in golden_values]  # fmt: skip
    return found


def read_disks(disks: dict[str, str], root: str | None = None) -> dict[str, dict[str, Any]]:
    """Name -> what its disk (a local qcow2 or raw file) holds of its identity, read
    read-only in as few appliances as batch.MAX_DISKS allows."""
    return batch.each_root(disks, root, lambda g, _name: _identity(g))


def _identity(g: Any) -> dict[str, Any]:
    def text(path: str) -> str | None:
        return g.cat(path).strip() if g.is_file(path) else None

    keys = []
    if g.is_dir("/etc/ssh"):
        for entry in sorted(g.ls("/etc/ssh")):
            if not (entry.startswith("ssh_host_") and entry.endswith(".pub")):
                continue
            if (found := fingerprint(g.cat(f"/etc/ssh/{entry}"))) is not None:
                keys.append(found)
    duid = None
    for directory in ("/var/lib/dhcp", "/var/lib/dhclient"):
        if g.is_dir(directory):
            for entry in sorted(g.ls(directory)):
                if entry.endswith(".leases") and (m := _DUID.search(g.cat(f"{directory}/{entry}"))):
                    duid = m.group(1)
    machine_id = text("/etc/machine-id")
    if machine_id in ("", "uninitialized"):
        machine_id = None  # systemd makes one at the next boot
    personalized = g.exists(FIRSTBOOT_DONE) or g.exists("/var/lib/cloud/instance")
    return {"hostname": text("/etc/hostname"), "ssh_keys": keys, "duid": duid,
            "machine_id": machine_id, "pending": not personalized}  # fmt: skip


@contextlib.contextmanager
def local_copies(
    clones: list[dict[str, Any]], golden_path: str, conns: virt.Connections
) -> Iterator[dict[str, str]]:
    """Name -> a local file reading as the clone's disk: its overlay downloaded through
    its host's libvirt and put over the golden (a full clone's whole disk)."""
    with tempfile.TemporaryDirectory(prefix="p2v-clones-") as scratch:
        out = {}
        for clone in clones:
            local = os.path.join(scratch, f"{clone['name']}.qcow2")
            conn = conns(clone["uri"])
            vol = storage.volume_at(conn, clone["disk"])
            if vol is None:
                continue
            backed = storage.backing(vol) is not None
            storage.download_file(conn, vol, local)
            if backed:
                rebase_unsafe(local, golden_path)
            out[clone["name"]] = local
        yield out


def check(
    journal: Any, golden: str | None, timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> list[dict[str, Any]]:
    """Per golden (all, or the one named): each clone's identity as read now, and the
    clashes. Clones of the newest clone job that made each name on each host."""
    groups = {path: group for path, group in goldens.clones_made(journal).items()
              if golden in (None, group["golden"].get("name"), path)}  # fmt: skip
    out = []
    with virt.Connections(timeout) as conns:
        for path, group in groups.items():
            out.append(_check_group(path, group, conns))
    return out


def _check_group(path: str, group: dict[str, Any], conns: virt.Connections) -> dict[str, Any]:
    """One golden's clones: each read from its domain and its disk, then compared."""
    clones = list(group["clones"].values())
    seen = []
    given: dict[str, str | None] = {}
    for clone in clones:
        found = Seen(clone["name"], clone["uri"], ip=clone.get("ip"))
        try:
            domain = virt.lookup(conns(clone["uri"]), clone["name"])
            if domain is None:
                found.error = "no such domain on its host now"
            else:
                xml = domain.XMLDesc(0)
                found.uuid = domain.UUIDString()
                found.macs = [n.mac.lower() for n in DomainXml.parse(xml).nics]
                given[clone["name"]] = identity_of(xml).get("hostname")
        except ComponentError as error:
            found.error = str(error)
        seen.append(found)
    golden_seen = Seen("golden", None, macs=list(group["golden"].get("macs") or []))
    with local_copies([c for c, s in zip(clones, seen, strict=True) if not s.error], path,
                      conns) as disks:  # fmt: skip
        read = read_disks({**disks, "\0golden": path}, group["golden"].get("root"))
    for found in seen:
        for key, value in read.get(found.name, {}).items():
            setattr(found, key, value)
        if found.pending:  # its disk still holds the golden's identity files
            found.hostname, found.machine_id = given.get(found.name), None
            found.ssh_keys, found.duid = [], None
    for key, value in read.get("\0golden", {}).items():
        if key != "error":
            setattr(golden_seen, key, value)
    return {"golden": group["golden"], "clones": [s.to_json() for s in seen],
            "clashes": clashes(seen, golden_seen)}  # fmt: skip

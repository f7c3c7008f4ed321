"""Offline personalization (`p2v clone --personalize offline`): each linked clone's
identity written into its own overlay before it first boots, in as few libguestfs
appliances as batch.MAX_DISKS allows, never one per clone. A clone gets its
hostname, a new machine-id (which also gives it its own DHCP DUID), new SSH host keys
(made here, as `ssh-keygen -A` makes them, when the image has OpenSSH), its NIC names
pinned to its own MACs, its address from --ip-pool on its first NIC (ifupdown), and
the first-boot unit's done mark, so that it boots as itself with nothing left to do.

The overlays are made over the local golden, written, then pointed at the base their
host holds (the same bytes) for the upload; the private keys only ever sit in the
overlays and a private scratch directory, never in the journal."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import re
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from p2v import qemu
from p2v.clone import batch, seal
from p2v.clone.inventory import fingerprint
from p2v.clone.plan import Identity
from p2v.errors import ComponentError

SSH_KEYGEN = "/usr/bin/ssh-keygen"  # in the image: it has OpenSSH, and wants host keys
KEY_TYPES = ("rsa", "ecdsa", "ed25519")


def overlays(golden: str, names: Iterable[str], scratch: str) -> dict[str, str]:
    """Name -> a new qcow2 overlay over the local golden, in `scratch`."""
    out = {}
    for name in names:
        out[name] = os.path.join(scratch, f"{name}.qcow2")
        qemu.create_overlay(out[name], golden)
    return out


INTERFACES = "/etc/network/interfaces"
_STANZA = re.compile(r"^(iface|auto|allow-\S+|mapping|source|source-directory)\b")


def with_address(interfaces: str, nic: str, address: str) -> str | None:
    """ifupdown's configuration with `nic` given the static ADDRESS/PREFIX, or None
    when it has no stanza for `nic`. Its other settings are kept; its gateway too when
    it is inside the new network, else (or without one) the network's first address,
    the gateway by the custom the address pool follows. Pure."""
    network = ipaddress.ip_interface(address).network
    out: list[str] = []
    found, inside = False, False
    for line in interfaces.splitlines(keepends=True):
        words = line.split()
        if _STANZA.match(line):
            inside = words[:3] == ["iface", nic, "inet"]
            if inside:
                found = True
                gateway = _gateway(interfaces, nic, network)
                out.append(f"iface {nic} inet static\n\taddress {address}\n\tgateway {gateway}\n")
                continue
        elif inside and words and words[0] in ("address", "netmask", "gateway"):
            continue
        out.append(line)
    return "".join(out) if found else None


def _gateway(interfaces: str, nic: str, network: Any) -> str:
    inside = False
    for line in interfaces.splitlines():
        words = line.split()
        if _STANZA.match(line):
            inside = words[:3] == ["iface", nic, "inet"]
        elif inside and len(words) > 1 and words[0] == "gateway":
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(words[1]) in network:
                    return words[1]
    return str(next(network.hosts()))


def write(
    disks: dict[str, str],
    clones: dict[str, Identity],
    nic_names: list[str],
    root: str | None,
    rng: random.Random,
) -> dict[str, dict[str, Any]]:
    """Each clone's identity written into its overlay (name -> path): name -> its
    machine-id and SSH host-key fingerprints."""
    if batch.partition_of(root) is None:
        raise ComponentError(f"the golden's root {root} is not a partition: its clones "
                             "cannot be personalized offline")  # fmt: skip
    machine_ids = {name: uuid.UUID(int=rng.getrandbits(128), version=4).hex for name in disks}
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="p2v-keys-") as keys, \
            ThreadPoolExecutor(workers) as pool:  # fmt: skip
        made: dict[str, Future[dict[str, bytes]]] = {}
        making = threading.Lock()  # appliances visit side by side

        def visit(g: Any, name: str) -> dict[str, Any]:
            if not made and g.is_file(SSH_KEYGEN):  # clones are alike: all want keys
                with making:
                    if not made:
                        made.update({n: pool.submit(host_keys, keys, n) for n in disks})
            identity = clones[name]
            g.write("/etc/hostname", f"{name}\n".encode())
            hosts = g.cat("/etc/hosts") if g.is_file("/etc/hosts") else ""
            g.write("/etc/hosts", seal.with_hostname(hosts, name).encode())
            g.write("/etc/machine-id", f"{machine_ids[name]}\n".encode())
            for nic, mac in zip(nic_names, identity.macs, strict=False):
                path, text = seal.pinned_link(nic, mac)
                g.mkdir_p(os.path.dirname(path))
                g.write(path, text.encode())
            applied = None
            if identity.ip and nic_names and g.is_file(INTERFACES):
                configured = with_address(g.cat(INTERFACES), nic_names[0], identity.ip)
                if configured is not None:
                    g.write(INTERFACES, configured.encode())
                    applied = identity.ip
            fingerprints = []
            for path, data in (made[name].result() if made else {}).items():
                g.write(path, data)
                g.chmod(0o644 if path.endswith(".pub") else 0o600, path)
                if path.endswith(".pub") and (found := fingerprint(data.decode())):
                    fingerprints.append(found)
            g.mkdir_p(os.path.dirname(seal.FIRSTBOOT_DONE))
            g.write(seal.FIRSTBOOT_DONE, b"offline\n")
            return {"machine_id": machine_ids[name], "ssh_keys": sorted(fingerprints),
                    "address": applied}  # fmt: skip

        written = batch.each_root(disks, root, visit, writable=True)
    failed = [f"{n}: {r['error']}" for n, r in written.items() if "error" in r]
    if failed:
        raise ComponentError("personalizing offline: " + "; ".join(failed[:5]))
    return written


def host_keys(scratch: str, name: str) -> dict[str, bytes]:
    """New SSH host keys of the types `ssh-keygen -A` makes (those sshd's default
    configuration reads), commented root@NAME as a clone's own would be: their paths
    in the guest -> contents."""
    top = os.path.join(scratch, name)
    os.mkdir(top, 0o700)
    out = {}
    for kind in KEY_TYPES:
        local = os.path.join(top, f"ssh_host_{kind}_key")
        argv = [SSH_KEYGEN, "-q", "-t", kind, "-N", "", "-C", f"root@{name}", "-f", local]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise ComponentError(f"ssh-keygen -t {kind}: {done.stderr.strip()}")
        for path in (local, f"{local}.pub"):
            with open(path, "rb") as f:
                out[f"/etc/ssh/{os.path.basename(path)}"] = f.read()
            os.unlink(path)
    return out

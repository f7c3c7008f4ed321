"""The network configuration follows the MAC: each NIC keeps the name the guest's
configuration uses (eno1, enp0s3, eth0), whatever the kernel calls virtio-net.

Rather than rewrite every configuration system (ifupdown, netplan, NetworkManager,
systemd-networkd), the name itself is pinned to the MAC: a systemd .link file where
systemd-udevd names NICs, an udev rule elsewhere. Every system that configures a NIC
by name then finds it. Stale rules that bound old hardware to names are removed.
"""

from __future__ import annotations

import re
from typing import Any

from imagebuilder.fixups import FixupReport, keep_original

PINNED_PREFIX = "10-p2v-"  # our files; read early, before the distribution's
LINK_DIR = "/etc/systemd/network"
RULES = "/etc/udev/rules.d/10-p2v-net-names.rules"
STALE_RULES = ("/etc/udev/rules.d/70-persistent-net.rules",)
KERNEL_NAMES = ("eth", "wlan")  # names the kernel gives: pinning to them races with it


def link_file(mac: str, name: str) -> str:
    return (
        "# p2v: this NIC keeps its name on virtio\n"
        f"[Match]\nMACAddress={mac}\n\n[Link]\nName={name}\n"
    )


def udev_rule(mac: str, name: str) -> str:
    return f'SUBSYSTEM=="net", ACTION=="add", ATTR{{address}}=="{mac}", NAME="{name}"\n'


def pin_nic_names(g: Any, nics: list[tuple[str, str]]) -> FixupReport:
    """`nics`: (MAC, name the guest used) of each NIC that keeps its MAC."""
    report = FixupReport("network follows the MAC")
    systemd_udev = any(
        g.exists(p) for p in ("/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd")
    )
    rules = []
    for mac, name in nics:
        if not name or name.startswith(KERNEL_NAMES):
            # ethN: the guest relied on the kernel's order; claiming ethN races with the
            # kernel, and with the MAC kept an old persistent rule still applies.
            report.changes.append(f"{mac}: name {name or '?'} left to the guest's rules")
            continue
        if systemd_udev:
            g.mkdir_p(LINK_DIR)
            path = f"{LINK_DIR}/{PINNED_PREFIX}{name}.link"
            g.write(path, link_file(mac, name).encode())
            report.changes.append(f"{path}: {name} follows {mac}")
        else:
            rules.append(udev_rule(mac, name))
    if rules:
        g.mkdir_p("/etc/udev/rules.d")
        g.write(RULES, "".join(rules).encode())
        report.changes.append(f"{RULES}: {len(rules)} NIC names follow their MACs")
    for stale in STALE_RULES:
        if g.is_file(stale) and not any(name.startswith(KERNEL_NAMES) for _, name in nics):
            keep_original(g, stale, report)
            g.rm(stale)
            report.changes.append(f"{stale}: removed (bound the old hardware)")
    return report


_IFUPDOWN = re.compile(r"^\s*iface\s+(\S+)\s+inet6?\s", re.MULTILINE)
_NETWORKD = re.compile(r"^\s*Name\s*=\s*(\S+)\s*$", re.MULTILINE)
_NM = re.compile(r"^\s*interface-name\s*=\s*(\S+)\s*$", re.MULTILINE)
_NETPLAN_ETHERNETS = re.compile(r"^(\s*)ethernets:\s*\n((?:\1\s+.*\n?)*)", re.MULTILINE)


def nic_names_in(path: str, text: str) -> list[str]:
    """NIC names a network configuration file configures (ifupdown, netplan,
    systemd-networkd, NetworkManager). Pure."""
    if path.startswith("/etc/network/interfaces"):
        found = _IFUPDOWN.findall(text)
    elif path.startswith("/etc/netplan/"):
        found = []
        for _indent, body in _NETPLAN_ETHERNETS.findall(text):
            keys = re.findall(r"^(\s+)([\w.-]+):", body, re.MULTILINE)
            if keys:
                first = len(keys[0][0])
                found += [k for i, k in keys if len(i) == first]
    elif path.startswith("/etc/systemd/network/"):
        found = _NETWORKD.findall(text) if path.endswith(".network") else []
    else:
        found = _NM.findall(text)
    return [n for n in found if n != "lo" and not any(c in n for c in "*?[")]


def configured_nic_names(g: Any) -> list[str]:
    """Every NIC name the guest's network configuration uses, in file order."""
    paths = ["/etc/network/interfaces"]
    for directory in ("/etc/network/interfaces.d", "/etc/netplan", "/etc/systemd/network",
                      "/etc/NetworkManager/system-connections"):  # fmt: skip
        if g.is_dir(directory):
            paths += [f"{directory}/{e}" for e in sorted(g.ls(directory))]
    names: list[str] = []
    for path in paths:
        if g.is_file(path) and not path.split("/")[-1].startswith(PINNED_PREFIX):
            names += [n for n in nic_names_in(path, g.cat(path)) if n not in names]
    return names

"""The live system's network, from the `ip=` option: DHCP on every NIC by default.

DHCP is busybox's udhcpc, one per NIC, left running to renew its lease; it applies
leases with boot-iso's script. Static settings are applied with ip(8).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.live.options import IpConfig, OptionError

SYS_NET = Path("/sys/class/net")
UDHCPC_SCRIPT = "/usr/share/p2v-agent/udhcpc.script"
ADDRESS_WAIT = 30.0  # seconds for a first address; the agent serves anyway after that


class NetworkError(Exception):
    pass


@dataclass(frozen=True)
class Link:
    name: str
    mac: str


def physical_links(sys_net: Path = SYS_NET) -> list[Link]:
    """Ethernet NICs backed by a device (no loopback, bridges or tunnels)."""
    links = []
    for entry in sorted(sys_net.iterdir()):
        try:
            if (entry / "type").read_text().strip() != "1" or not (entry / "device").exists():
                continue
            links.append(Link(entry.name, (entry / "address").read_text().strip().lower()))
        except OSError:
            continue
    return links


def select_links(links: list[Link], device: str) -> list[Link]:
    """The NICs an `ip=` option names (by kernel name or MAC); all when it names none."""
    if not device:
        return links
    chosen = [link for link in links if device in (link.name, link.mac)]
    if not chosen:
        have = ", ".join(f"{link.name} ({link.mac})" for link in links) or "none"
        raise OptionError(f"ip=: no NIC {device}; this machine has: {have}")
    return chosen


def configure(config: IpConfig, links: list[Link], say: Callable[[str], None]) -> None:
    if config.mode == "off":
        return
    for link in links:
        _ip("link", "set", "dev", link.name, "up")
    if config.mode == "static":
        if not links:
            raise NetworkError("ip=: a static address needs a NIC, and this machine has none")
        link = links[0]
        _ip("address", "replace", config.address, "dev", link.name)
        if config.gateway:
            _ip("route", "replace", "default", "via", config.gateway, "dev", link.name)
        if config.nameservers:
            Path("/etc/resolv.conf").write_text(
                "".join(f"nameserver {n}\n" for n in config.nameservers)
            )
        say(f"{link.name}: static address {config.address}")
        return
    for link in links:
        _start_dhcp(link)


def _start_dhcp(link: Link) -> None:
    pidfile = Path(f"/run/udhcpc.{link.name}.pid")
    if _alive(pidfile):
        return  # started by an earlier run of the agent; still renewing
    subprocess.Popen(
        ["busybox", "udhcpc", "-f", "-i", link.name, "-s", UDHCPC_SCRIPT, "-p", str(pidfile),
         "-t", "5", "-T", "2", "-A", "5", "-x", "hostname:p2v-agent"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def addresses(links: list[Link]) -> dict[str, list[str]]:
    """Global addresses of the given NICs: name -> ["10.0.2.15/24", ...]."""
    out = subprocess.run(["ip", "-json", "address", "show"], capture_output=True, text=True)
    found: dict[str, list[str]] = {link.name: [] for link in links}
    for entry in json.loads(out.stdout or "[]"):
        if entry.get("ifname") in found:
            found[entry["ifname"]] = [
                f"{a['local']}/{a['prefixlen']}"
                for a in entry.get("addr_info", [])
                if a.get("scope") == "global"
            ]
    return found


def wait_for_address(links: list[Link], timeout: float = ADDRESS_WAIT) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    while True:
        found = addresses(links)
        if any(found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip()}")

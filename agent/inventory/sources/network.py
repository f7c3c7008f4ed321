"""Network interfaces with a device behind them (not bridges or tunnels), from sysfs;
addresses from `ip -json address`."""

from __future__ import annotations

import json
import os

from agent.inventory.model import Nic
from agent.inventory.probe import Probe


def parse_ip_addresses(text: str) -> dict[str, list[str]]:
    addresses: dict[str, list[str]] = {}
    for link in json.loads(text):
        for info in link.get("addr_info", []):
            if "local" in info and info.get("scope") != "host":
                addresses.setdefault(link["ifname"], []).append(
                    f"{info['local']}/{info.get('prefixlen', '')}".rstrip("/")
                )
    return addresses


def read_nics(probe: Probe) -> list[Nic]:
    nics = []
    base = probe.path("/sys/class/net")
    for entry in sorted(base.glob("*")):
        if not (entry / "device").exists():
            continue  # lo, bridges, bonds, tunnels: no hardware to recreate
        sysfs = f"/sys/class/net/{entry.name}"
        mac = probe.read(f"{sysfs}/address")
        if not mac:
            continue
        driver_link = entry / "device" / "driver"
        speed = probe.read(f"{sysfs}/speed")  # unreadable while the link is down
        nics.append(
            Nic(
                name=entry.name,
                mac=mac.lower(),
                driver=os.path.basename(os.readlink(driver_link))
                if driver_link.is_symlink()
                else None,
                link=probe.read(f"{sysfs}/operstate"),
                speed_mbps=int(speed)
                if speed and speed.lstrip("-").isdigit() and int(speed) > 0
                else None,
            )
        )
    if nics:
        out = probe.run(["ip", "-json", "address", "show"], "IP addresses")
        if out:
            try:
                addresses = parse_ip_addresses(out)
            except (ValueError, KeyError):
                probe.note("`ip -json address` not understood: IP addresses unknown")
                addresses = {}
            for nic in nics:
                nic.addresses = addresses.get(nic.name, [])
    return nics

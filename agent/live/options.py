"""Kernel command-line options of the live agent (documented in boot-iso/README.md).

Pure parsing, so every form is tested without booting anything.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field

from agent.protocol import ANNOUNCE_PORT, DEFAULT_PORT, Address, SecretError, normalize_secret

_MAC = re.compile(r"^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$", re.IGNORECASE)


class OptionError(ValueError):
    """A kernel option the agent cannot use; the message names it."""


@dataclass(frozen=True)
class IpConfig:
    """The `ip=` option: DHCP (default), off, or a static address."""

    mode: str = "dhcp"  # "dhcp", "static" or "off"
    device: str = ""  # a NIC name or MAC address; "" = every NIC
    address: str = ""  # static: "ADDR/PREFIX"
    gateway: str = ""
    nameservers: tuple[str, ...] = ()


@dataclass(frozen=True)
class LiveOptions:
    listen: Address = field(default_factory=lambda: Address("0.0.0.0", DEFAULT_PORT))
    disks: tuple[str, ...] | None = None  # None: every disk but the live medium
    ip: IpConfig = field(default_factory=IpConfig)
    secret: str | None = None  # from p2v.secret= (visible in /proc/cmdline: one job only)
    server: Address | None = None  # p2v.server=: announce to this conversion host


def parse_cmdline(text: str) -> LiveOptions:
    """Options from the text of /proc/cmdline; unknown words are the kernel's business."""
    values: dict[str, str] = {}
    for word in shlex.split(text):
        name, sep, value = word.partition("=")
        if sep and (name.startswith("p2v.") or name == "ip"):
            values[name] = value
    try:
        listen = Address.parse(values.get("p2v.listen", ""), default_host="0.0.0.0")
    except ValueError as e:
        raise OptionError(f"p2v.listen={values['p2v.listen']}: {e}") from None
    disks = None
    if "p2v.disks" in values:
        disks = tuple(d.removeprefix("/dev/") for d in values["p2v.disks"].split(",") if d)
    secret = None
    if "p2v.secret" in values:
        try:
            secret = normalize_secret(values["p2v.secret"])
        except SecretError as e:
            raise OptionError(f"p2v.secret: {e}") from None  # the value is not repeated
    server = None
    if values.get("p2v.server"):
        try:
            server = Address.parse(values["p2v.server"], default_port=ANNOUNCE_PORT)
        except ValueError as e:
            raise OptionError(f"p2v.server={values['p2v.server']}: {e}") from None
    ip = parse_ip_option(values["ip"]) if "ip" in values else IpConfig()
    return LiveOptions(listen=listen, disks=disks, ip=ip, secret=secret, server=server)


def parse_ip_option(value: str) -> IpConfig:
    """`ip=dhcp|off|none` or the kernel's static form
    `ip=CLIENT:SERVER:GATEWAY:NETMASK:HOSTNAME:DEVICE:AUTOCONF[:DNS0[:DNS1]]`,
    where DEVICE may also be a MAC address and NETMASK a prefix length."""
    if value in ("dhcp", "on", "any", "both", ""):
        return IpConfig()
    if value in ("off", "none"):
        return IpConfig(mode="off")
    fields = value.split(":")
    if _MAC.match(value):  # a bare MAC: DHCP on that NIC
        return IpConfig(device=value.lower().replace("-", ":"))
    # A MAC as DEVICE holds colons itself: put it back together.
    if len(fields) >= 11 and _MAC.match(":".join(fields[5:11])):
        fields[5:11] = [":".join(fields[5:11]).lower()]
    fields += [""] * (9 - len(fields))
    client, _server, gateway, netmask, _hostname, device, autoconf, dns0, dns1 = fields[:9]
    if not client:
        if autoconf in ("", "dhcp", "on", "any", "both"):
            return IpConfig(device=device)
        if autoconf in ("off", "none"):
            return IpConfig(mode="off", device=device)
        raise OptionError(f"ip={value}: autoconf {autoconf!r} is not supported (use dhcp)")
    try:
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{netmask or '24'}").prefixlen
        address = ipaddress.IPv4Interface(f"{client}/{prefix}")
        for other in (gateway, dns0, dns1):
            if other:
                ipaddress.IPv4Address(other)
    except ValueError as e:
        raise OptionError(f"ip={value}: {e}") from None
    nameservers = tuple(n for n in (dns0, dns1) if n)
    return IpConfig("static", device, str(address), gateway, nameservers)

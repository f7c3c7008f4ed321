"""A bulk clone's plan, decided before anything is made: each clone's name, host,
identity (UUID, MAC addresses, address from the pool) and the base each host needs.
Pure: the job records the plan, so a resumed job makes exactly these clones."""

from __future__ import annotations

import functools
import ipaddress
import random
import re
import uuid as uuids
from dataclasses import asdict, dataclass, field
from typing import Any

from p2v.errors import InputError

_FIELD = re.compile(r"\{n(?::(0?\d+)d)?\}")


@dataclass(frozen=True)
class Host:
    uri: str
    free_memory: int  # bytes the host has for new guests
    domains: frozenset[str]  # the names defined there
    macs: frozenset[str]  # the MAC addresses its domains use


@dataclass(frozen=True)
class Identity:
    name: str  # the domain's name and the guest's hostname
    uri: str  # the host it is made on
    uuid: str
    macs: list[str]  # one per NIC of the template, in its order
    ip: str | None = None  # ADDRESS/PREFIX from --ip-pool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    clones: list[Identity] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"clones": [c.to_json() for c in self.clones]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls([Identity(**c) for c in data["clones"]])


def names(pattern: str, count: int, first: int = 1) -> list[str]:
    """`web-{n}` (or `web-{n:03d}`) for n = first .. first+count-1."""
    if count < 1:
        raise InputError("--count is at least 1")
    if not _FIELD.search(pattern):
        if count > 1:
            raise InputError(f"--name {pattern!r} has no {{n}}: {count} clones need their "
                             "own names (web-{n}, web-{n:03d})")  # fmt: skip
        return [pattern]
    out = [_FIELD.sub(functools.partial(_number, n), pattern) for n in range(first, first + count)]
    bad = [n for n in out if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", n)]
    if bad:
        raise InputError(f"{bad[0]!r} is not a hostname: letters, digits and dashes, "
                         "at most 63")  # fmt: skip
    return out


def _number(n: int, field: re.Match[str]) -> str:
    return format(n, f"{field.group(1) or ''}d")


def spread(clone_names: list[str], hosts: list[Host], memory: int, policy: str) -> list[str]:
    """The host (its URI) each clone goes to: `round-robin` in the order the hosts were
    given, or `memory`: each to the host with the most free memory left. A host
    without room for its share is refused."""
    if not hosts:
        raise InputError("no host to clone onto")
    left = {h.uri: h.free_memory for h in hosts}
    out = []
    for i, _ in enumerate(clone_names):
        if policy == "round-robin":
            uri = hosts[i % len(hosts)].uri
        else:
            uri = max(hosts, key=lambda h: left[h.uri]).uri
        left[uri] -= memory
        out.append(uri)
    short = [uri for uri, free in left.items() if free < 0]
    if short:
        raise InputError(f"{', '.join(short)} has not the memory for its share of the clones "
                         f"({memory >> 20} MiB each)")  # fmt: skip
    return out


def collisions(clone_names: list[str], hosts: list[Host]) -> list[str]:
    """`NAME on URI` for each clone name a host has a domain of already."""
    return [f"{n} on {h.uri}" for n in clone_names for h in hosts if n in h.domains]


def addresses(cidr: str | None, count: int, taken: set[str]) -> list[str | None]:
    """`count` addresses ADDRESS/PREFIX from the pool, in order, skipping the network's
    own, its broadcast, its first (the gateway, by custom) and `taken`."""
    if cidr is None:
        return [None] * count
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError as error:
        raise InputError(f"--ip-pool {cidr}: {error}") from None
    hosts = list(network.hosts())[1:] if network.num_addresses > 2 else list(network.hosts())
    free = [a for a in hosts if str(a) not in taken]
    if len(free) < count:
        raise InputError(f"--ip-pool {cidr} has {len(free)} free addresses, {count} clones "
                         "need one each")  # fmt: skip
    return [f"{a}/{network.prefixlen}" for a in free[:count]]


def new_macs(count: int, taken: set[str], rng: random.Random) -> list[str]:
    """`count` MAC addresses in QEMU's range (52:54:00), none of `taken` nor repeated."""
    out: list[str] = []
    used = {m.lower() for m in taken}
    while len(out) < count:
        mac = "52:54:00:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(3))
        if mac not in used:
            used.add(mac)
            out.append(mac)
    return out


def make(
    clone_names: list[str],
    uris: list[str],
    hosts: list[Host],
    nics: int,
    ips: list[str | None],
    rng: random.Random,
) -> Plan:
    """Each clone's identity; MACs unique across every host given."""
    taken = set().union(*(h.macs for h in hosts)) if hosts else set()
    macs = new_macs(nics * len(clone_names), taken, rng)
    clones = [
        Identity(name, uri, str(uuids.UUID(int=rng.getrandbits(128), version=4)),
                 macs[i * nics:(i + 1) * nics], ips[i])
        for i, (name, uri) in enumerate(zip(clone_names, uris, strict=True))
    ]  # fmt: skip
    return Plan(clones)

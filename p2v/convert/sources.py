"""Where a conversion reads from, recorded so that a resumed job opens it again.

A source is a small JSON record in the job: `{"agent": "HOST:PORT", "secret_file":
F}` for a server running the agent, or `{"disks": [PATH, ...], "inventory": F}` for
images and block devices. The record names files, never their contents.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.inventory.model import Inventory, SchemaError
from agent.protocol import ZeroMap
from agent.serve import exportable_disks
from p2v.convert.disks import SourceDisk, disks_from_images
from p2v.errors import InputError


def agent_source(address: str, secret_file: str) -> dict[str, Any]:
    return {"agent": address, "secret_file": str(Path(secret_file).resolve())}


def disk_source(paths: list[str], inventory_file: str | None) -> dict[str, Any]:
    return {
        "disks": [str(Path(p).resolve()) for p in paths],
        "inventory": str(Path(inventory_file).resolve()) if inventory_file else None,
    }


def describe(source: dict[str, Any]) -> str:
    if "agent" in source:
        return f"the agent at {source['agent']}"
    return ", ".join(source["disks"])


@dataclass
class Opened:
    """A source, open for as long as a conversion reads it."""

    inventory: Inventory
    disks: list[SourceDisk]
    description: str  # for people: "the agent at HOST:PORT", or the image paths
    #: Why the source went away while open (an agent that stopped answering), or None;
    #: asked when something fails, so that the failure is told for what it is.
    lost: Callable[[], str | None] = lambda: None
    #: The zeros found so far on a disk by name, where the source looks for them.
    zero_map: Callable[[str], ZeroMap | None] = lambda name: None


def disk_names(source: dict[str, Any], connect_timeout: float) -> list[str]:
    """The names of the disks a conversion of `source` would copy, in the guest's
    order: proves that the source can be read (or the agent reached) before anything
    is recorded."""
    if "agent" not in source:
        return [d.name for d in _images(source)[1]]
    from p2v.host.agentclient import AgentSession, agent_address

    address = agent_address(source["agent"])
    with AgentSession(address, source["secret_file"], connect_timeout) as session:
        return _agent_disks(session.inventory(), str(address))


def _images(source: dict[str, Any]) -> tuple[Inventory, list[SourceDisk]]:
    return disks_from_images(source["disks"], _inventory_file(source.get("inventory")))


def _agent_disks(inventory: Inventory, address: str) -> list[str]:
    names = sorted(exportable_disks(inventory, None), key=disk_order)
    if not names:
        raise InputError(f"the agent at {address} serves no disk")
    return names


@contextlib.contextmanager
def opened(source: dict[str, Any], relay_dir: Path, connect_timeout: float) -> Iterator[Opened]:
    """The inventory and the disks, readable by QEMU, for as long as the context lasts.
    An agent's disks are relayed on a Unix socket in `relay_dir`: its path is part of
    the overlays' backing names, so a resumed job must use the same directory."""
    if "agent" not in source:
        yield Opened(*_images(source), describe(source))
        return
    from p2v.host.agentclient import AgentSession, agent_address

    address = agent_address(source["agent"])
    with AgentSession(address, source["secret_file"], connect_timeout) as session:
        inventory = session.inventory()  # also proves the secret before QEMU sees the relay
        names = _agent_disks(inventory, str(address))
        relay_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with session.local_proxy(relay_dir / "agent.sock", names[0]) as proxy:
            disks = []
            for name in names:
                disk = inventory.disk(name)
                assert disk is not None
                disks.append(
                    SourceDisk(
                        name,
                        proxy.uri(name),
                        disk.size_bytes,
                        "raw",
                        origin=f"agent://{address}/{name}",
                    )  # fmt: skip
                )

            def lost() -> str | None:
                return proxy.lost or session.probe()

            yield Opened(inventory, disks, describe(source), lost, session.zero_map)


def disk_order(name: str) -> tuple[int, int, str]:
    """sda, sdb, ... sdaa first, then the others (nvme0n1, ...): the guest's fstab
    names SCSI-style disks by their order, and libguestfs reads them that way, so its
    disk N must be the guest's disk N."""
    scsi = re.fullmatch(r"(?:sd|hd|vd|xvd)[a-z]+", name)
    return (0 if scsi else 1, len(name) if scsi else 0, name)


def _inventory_file(path: str | None) -> Inventory | None:
    if not path:
        return None
    try:
        return Inventory.from_json(Path(path).read_text())
    except OSError as e:
        raise InputError(f"--inventory {path}: {e.strerror}") from None
    except SchemaError as e:
        raise InputError(f"--inventory {path}: {e}") from None

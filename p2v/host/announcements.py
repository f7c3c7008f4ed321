"""Agents that announce themselves (their unattended mode, `p2v.server=`).

An announcement is one JSON line from the agent: its port, machine identity and the
fingerprint of its secret. It is only a claim, made over plain TCP; it becomes an
agent we report once we have connected back to it with our secret and read its
inventory, which only an agent holding the same secret allows (TLS-PSK). Nothing is
served here, and the secret never leaves this host.
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from agent.inventory.model import Inventory
from agent.protocol import ANNOUNCE_VERSION, Address
from p2v.errors import InputError
from p2v.host.agentclient import AgentError, AgentSession
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT

MAX_ANNOUNCEMENT = 64 << 10
READ_TIMEOUT = 10.0


class AnnouncementError(ValueError):
    """An announcement we cannot use; the message says why, never a secret."""


@dataclass(frozen=True)
class Announcement:
    host: str  # where the connection came from: what we connect back to
    port: int
    fingerprint: str
    serial: str | None = None
    uuid: str | None = None
    disks: tuple[str, ...] = ()

    @classmethod
    def parse(cls, line: bytes, peer_host: str) -> Announcement:
        try:
            record = json.loads(line)
        except ValueError:
            raise AnnouncementError("not a p2v agent announcement (not JSON)") from None
        if not isinstance(record, dict) or "p2v_agent_announce" not in record:
            raise AnnouncementError("not a p2v agent announcement")
        if record["p2v_agent_announce"] != ANNOUNCE_VERSION:
            raise AnnouncementError(
                f"announcement version {record['p2v_agent_announce']}, this p2v reads "
                f"{ANNOUNCE_VERSION}: use the agent ISO of the same release"
            )
        port = record.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise AnnouncementError(f"announcement with a bad port {port!r}")
        return cls(
            host=peer_host,
            port=port,
            fingerprint=str(record.get("fingerprint", "")),
            serial=record.get("serial"),
            uuid=record.get("uuid"),
            disks=tuple(str(d) for d in record.get("disks", [])),
        )

    @property
    def address(self) -> Address:
        return Address(self.host, self.port)


@dataclass
class VerifiedAgent:
    announcement: Announcement
    inventory: Inventory

    def to_json(self) -> dict[str, Any]:
        machine = self.inventory.machine
        return {
            "agent": str(self.announcement.address),
            "serial": machine.serial,
            "uuid": machine.uuid,
            "vendor": machine.vendor,
            "product": machine.product,
            "disks": list(self.announcement.disks),
            "fingerprint": self.announcement.fingerprint,
        }

    def describe(self) -> str:
        m = self.inventory.machine
        machine = " ".join(v for v in (m.vendor, m.product) if v) or "unknown machine"
        disks = ",".join(self.announcement.disks) or "no disks"
        return (
            f"agent {self.announcement.address}  {machine}  serial {m.serial or '?'}  "
            f"disks {disks}  (verified with the secret)"
        )


@dataclass
class AnnouncementListener:
    """Accepts announcements one at a time and verifies each by connecting back."""

    listen: Address
    secret_file: str
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT  # to verify an agent, each stage
    _sock: socket.socket | None = None
    _seen: set[tuple[str, int]] = field(default_factory=set)

    def __enter__(self) -> AnnouncementListener:
        family = socket.AF_INET6 if ":" in self.listen.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.listen.host, self.listen.port))
        except OSError as e:
            sock.close()
            raise InputError(f"cannot listen on {self.listen}: {e.strerror}") from None
        sock.listen(16)
        self._sock = sock
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sock is not None:
            self._sock.close()

    def next(self, timeout: float | None) -> VerifiedAgent | str | None:
        """One connection: a newly verified agent, a refusal (its reason), or None when
        nothing new arrived (timeout, or an agent already reported announcing again)."""
        assert self._sock is not None
        self._sock.settimeout(timeout)
        try:
            conn, peer = self._sock.accept()
        except TimeoutError:
            return None
        with conn:
            conn.settimeout(READ_TIMEOUT)
            try:
                line = conn.makefile("rb").readline(MAX_ANNOUNCEMENT)
                result = self._verify(Announcement.parse(line, peer[0]))
            except (AnnouncementError, AgentError) as e:
                self._answer(conn, f"refused: {e}")
                return f"refused an announcement from {peer[0]}: {e}"
            except OSError as e:
                return f"an announcement from {peer[0]} failed: {e}"
            self._answer(conn, f"ok: verified by {socket.gethostname()}")
            return result

    def _verify(self, announcement: Announcement) -> VerifiedAgent | None:
        with AgentSession(announcement.address, self.secret_file, self.connect_timeout) as session:
            if announcement.fingerprint != session.fingerprint:
                raise AgentError(
                    f"its secret is not ours (fingerprint {announcement.fingerprint}, "
                    f"ours {session.fingerprint})"
                )
            inventory = session.inventory()
        key = (announcement.host, announcement.port)
        if key in self._seen:
            return None
        self._seen.add(key)
        return VerifiedAgent(announcement, inventory)

    @staticmethod
    def _answer(conn: socket.socket, text: str) -> None:
        with contextlib.suppress(OSError):  # the agent will announce again
            conn.sendall(text.encode() + b"\n")

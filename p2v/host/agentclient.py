"""The conversion host's side of the agent: where it is, the secret, the inventory,
and its disks as transfer endpoints.

Everything goes through libnbd with TLS-PSK, as the agent requires. The key file
that libnbd reads lives in a private directory for the length of the session and
is the only place the secret is written; names shown to users never carry it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbd

from agent.inventory.model import Inventory, SchemaError
from agent.protocol import (
    INVENTORY_EXPORT,
    PSK_IDENTITY,
    Address,
    SecretError,
    ZeroMap,
    fingerprint,
    read_secret_file,
    write_psk_file,
    zero_map_export,
)
from p2v.errors import AgentError, InputError
from p2v.transfer import DEFAULT_CONNECT_TIMEOUT
from p2v.transfer.endpoints.handshake import (
    CONNECT,
    HANDSHAKE,
    CommandTimeout,
    HandshakeTimeout,
    connect_within,
    disconnect,
    wait_for,
)

__all__ = ["AgentError", "AgentSession", "agent_address", "parse_disk_url"]

log = logging.getLogger(__name__)

SCHEME = "agent://"
MAX_INVENTORY = 64 << 20
MAX_ZERO_MAP = 256 << 20
RECORD_REQUEST = 16 << 20  # bytes a request for a record asks at once (servers cap them)
WATCH_FAILURES = 2  # probes in a row the agent must miss before the relay is stopped
WATCH_INTERVAL = 5.0  # seconds between two checks that the agent still answers


def agent_address(text: str) -> Address:
    """HOST, HOST:PORT or [IPv6]:PORT, as typed after --agent or agent://."""
    try:
        return Address.parse(text)
    except ValueError as e:
        raise InputError(f"agent address {e}") from None


def parse_disk_url(url: str) -> tuple[Address, str]:
    """agent://HOST[:PORT]/DISK -> (address, kernel name of the disk)."""
    rest = url.removeprefix(SCHEME)
    where, _, disk = rest.partition("/")
    disk = disk.strip("/")
    if not where or not disk or "/" in disk:
        raise InputError(
            f"{url}: an agent disk is agent://HOST[:PORT]/DISK, e.g. agent://10.0.0.5/sda"
        )
    return agent_address(where), disk


class _NoSuchExport(AgentError):
    pass


class AgentSession:
    """The secret in a private key file, and connections made with it."""

    def __init__(
        self,
        address: Address,
        secret_file: str | None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        if not secret_file:
            raise InputError(
                f"the agent at {address} needs its secret: add --secret-file F "
                "(the secret is shown on the server's console, or was given to the agent)"
            )
        try:
            key = read_secret_file(secret_file)
        except SecretError as e:
            raise InputError(str(e)) from None
        self.address = address
        self.connect_timeout = connect_timeout
        self.fingerprint = fingerprint(key)
        self._dir = Path(tempfile.mkdtemp(prefix="p2v-agent-"))  # mode 0700
        self._psk = write_psk_file(self._dir, key)

    def connect(self, h: Any, export: str) -> None:
        h.set_tls(nbd.TLS_REQUIRE)
        h.set_tls_psk_file(str(self._psk))
        h.set_tls_username(PSK_IDENTITY)
        h.set_export_name(export)
        try:
            connect_within(
                h,
                lambda h: h.aio_connect_tcp(self.address.host, str(self.address.port)),
                self.connect_timeout,
            )
        except nbd.Error as e:
            raise self._explain(e, export) from None
        except HandshakeTimeout as e:
            raise self._explain_timeout(e) from None

    def _explain_timeout(self, timeout: HandshakeTimeout) -> AgentError:
        where = f"the agent at {self.address}"
        check = {
            CONNECT: "is the server up and booted from the agent ISO, the address right, "
            f"and TCP port {self.address.port} open on the way?",
            HANDSHAKE: "is it `p2v-agent serve` that listens on that port (not another "
            "service, or a NAT forwarding to a machine that is not listening)?",
        }.get(timeout.stage, "the agent may be overloaded or hung: restart it on the server")
        return AgentError(f"{where} does not answer: {timeout} ({check})")

    def _explain(self, error: Any, export: str) -> AgentError:
        text = (error.string or "").lower()
        where = f"the agent at {self.address}"
        if "connection refused" in text or "no route" in text or "timed out" in text:
            return AgentError(
                f"cannot reach {where}: {error.string} (is `p2v-agent serve` running there, "
                "and the port open?)"
            )
        if "name or service not known" in text or "not known" in text:
            return AgentError(f"cannot reach {where}: unknown host")
        if "no export named" in text or "no such file" in text:
            if export == INVENTORY_EXPORT:
                return AgentError(f"{where} serves no inventory: is it a p2v agent?")
            return _NoSuchExport(f"{where} does not export a disk named {export!r}")
        if "handshake" in text or "tls" in text or "decrypt" in text or "psk" in text:
            return AgentError(
                f"{where} refused the secret (fingerprint {self.fingerprint}); check that "
                "--secret-file holds the secret the agent shows or was given"
            )
        return AgentError(f"{where}: {error.string}")

    def _read_export(self, export: str, limit: int) -> bytes:
        """The whole of a small export (a record, not a disk), each request of it
        within the time limit."""
        h = nbd.NBD()
        self.connect(h, export)
        try:
            size = h.get_size()
            if size > limit:
                raise AgentError(f"the agent at {self.address} sent an oversized {export}")
            data = bytearray(size)
            for offset in range(0, size, RECORD_REQUEST):
                part = nbd.Buffer.from_buffer(memoryview(data)[offset : offset + RECORD_REQUEST])
                wait_for(h, h.aio_pread(part, offset), self.connect_timeout, f"reading {export}")
        except CommandTimeout as e:
            raise AgentError(f"the agent at {self.address} stopped answering: {e}") from None
        except nbd.Error as e:
            raise AgentError(f"the agent at {self.address}: {e.string}") from None
        finally:
            disconnect(h)
        return bytes(data)

    def inventory(self) -> Inventory:
        data = self._read_export(INVENTORY_EXPORT, MAX_INVENTORY)
        try:
            return Inventory.from_json(data)
        except SchemaError as e:
            raise AgentError(f"the agent at {self.address}: {e}") from None

    def zero_map(self, disk: str) -> ZeroMap | None:
        """The runs of zeros the agent has found on `disk` so far; None from an agent
        that does not look for them, or when the map cannot be had: it only spares
        reading zeros, so without it the disk is read in full."""
        try:
            data = self._read_export(zero_map_export(disk), MAX_ZERO_MAP)
            return ZeroMap.from_json(data)
        except _NoSuchExport:
            return None
        except (AgentError, ValueError) as e:
            log.warning("%s: no map of zeros from the agent, reading all of it: %s", disk, e)
            return None

    def open_disk(self, disk: str, *, own: bool = False) -> Any:
        """A read-only transfer endpoint on one of the agent's disks; with `own`,
        closing it ends this session too. The zeros the agent has found on the disk
        so far are known as such, and not read."""
        from p2v.transfer.endpoints.nbd import NbdEndpoint

        found = self.zero_map(disk)
        return NbdEndpoint(
            f"{SCHEME}{self.address}/{disk}",
            lambda h: self.connect(h, disk),
            writable=False,
            on_close=self.close if own else None,
            zeros=[(offset, offset + length) for offset, length in found.runs] if found else (),
        )

    @contextlib.contextmanager
    def local_proxy(
        self, socket: Path, disk: str, watch_interval: float = WATCH_INTERVAL
    ) -> Iterator[LocalProxy]:
        """The agent's disks on a local Unix socket, for programs that cannot do
        TLS-PSK themselves (QEMU's backing files, libguestfs): nbdkit's nbd plugin
        relays each connection to the agent over TLS-PSK, read-only. Export names
        are the agent's disk names. Connect once first (`inventory`) so that a wrong
        secret is explained here rather than as a QEMU error later.

        The relay itself has no time limits, so the agent is watched beside it: the
        relay is tried once through `disk` when it starts, then the agent is asked
        every few seconds whether it still answers; when it does not, the relay is
        stopped, so that what reads through it fails instead of waiting forever, and
        `LocalProxy.lost` says why."""
        command = [
            "nbdkit", "--exit-with-parent", "--foreground", "--readonly",
            "--unix", str(socket), "nbd",
            f"hostname={self.address.host}", f"port={self.address.port}",
            "dynamic-export=true", "tls=require", f"tls-psk={self._psk}",
            f"tls-username={PSK_IDENTITY}",
        ]  # fmt: skip
        socket.unlink(missing_ok=True)
        relay_log = self._dir / "proxy.log"  # a file: a pipe nobody reads would block nbdkit
        with open(relay_log, "w") as errors:
            relay = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=errors)
        proxy = LocalProxy(socket)
        watch = threading.Thread(
            target=self._watch, args=(relay, proxy, watch_interval), daemon=True
        )
        try:
            deadline = time.monotonic() + 15
            while not socket.exists():
                if relay.poll() is not None or time.monotonic() > deadline:
                    error = relay_log.read_text().strip() or "nbdkit did not start in time"
                    raise AgentError(f"cannot relay the agent's disks: {error}")
                time.sleep(0.05)
            self._try_relay(socket, disk)
            watch.start()
            yield proxy
        finally:
            proxy.closing.set()
            _stop(relay)
            if watch.is_alive():  # a probe in progress ends within its time limits
                watch.join(3 * self.connect_timeout + 10)
            socket.unlink(missing_ok=True)

    def _try_relay(self, socket: Path, disk: str) -> None:
        """Open `disk` through the relay: it proves the relay reaches the agent."""
        h = nbd.NBD()
        h.set_export_name(disk)
        try:
            connect_within(h, lambda h: h.aio_connect_unix(str(socket)), self.connect_timeout)
        except HandshakeTimeout:
            raise AgentError(
                f"the relay on this host could not open {disk} on the agent at "
                f"{self.address} within {self.connect_timeout:g} s"
            ) from None
        except nbd.Error as e:
            raise AgentError(f"the relay to the agent at {self.address}: {e.string}") from None
        disconnect(h)

    def _watch(self, relay: subprocess.Popen[bytes], proxy: LocalProxy, interval: float) -> None:
        missed = 0
        while not proxy.closing.wait(interval):
            lost = self.probe()
            missed = missed + 1 if lost else 0
            if lost and missed >= WATCH_FAILURES and not proxy.closing.is_set():
                proxy.lost = lost
                _stop(relay)
                return

    def probe(self) -> str | None:
        """None when the agent answers now, within the time limits; else why not."""
        h = nbd.NBD()
        try:
            self.connect(h, INVENTORY_EXPORT)
        except (AgentError, nbd.Error) as e:
            return str(e)
        disconnect(h)
        return None

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> AgentSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalProxy:
    """Where the relayed disks are: a URI QEMU and libnbd open without a secret."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.closing = threading.Event()
        self.lost: str | None = None  # why the relay was stopped: the agent went away

    def uri(self, disk: str) -> str:
        return f"nbd+unix:///{disk}?socket={self.socket}"


def _stop(relay: subprocess.Popen[bytes]) -> None:
    relay.terminate()
    try:
        relay.wait(10)
    except subprocess.TimeoutExpired:
        relay.kill()  # stuck on a connection to an agent that does not answer
        relay.wait()

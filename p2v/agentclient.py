"""The conversion host's side of the agent: where it is, the secret, the inventory,
and its disks as transfer endpoints.

Everything goes through libnbd with TLS-PSK, as the agent requires. The key file
that libnbd reads lives in a private directory for the length of the session and
is the only place the secret is written; names shown to users never carry it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
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
    fingerprint,
    read_secret_file,
    write_psk_file,
)
from p2v.errors import InputError, P2VError

SCHEME = "agent://"
MAX_INVENTORY = 64 << 20


class AgentError(P2VError):
    """The agent cannot be reached, refuses us, or speaks another version."""

    exit_code = 6


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


class AgentSession:
    """The secret in a private key file, and connections made with it."""

    def __init__(self, address: Address, secret_file: str | None) -> None:
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
        self.fingerprint = fingerprint(key)
        self._dir = Path(tempfile.mkdtemp(prefix="p2v-agent-"))  # mode 0700
        self._psk = write_psk_file(self._dir, key)

    def connect(self, h: Any, export: str) -> None:
        h.set_tls(nbd.TLS_REQUIRE)
        h.set_tls_psk_file(str(self._psk))
        h.set_tls_username(PSK_IDENTITY)
        h.set_export_name(export)
        try:
            h.connect_tcp(self.address.host, str(self.address.port))
        except nbd.Error as e:
            raise self._explain(e, export) from None

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
            return AgentError(f"{where} does not export a disk named {export!r}")
        if "handshake" in text or "tls" in text or "decrypt" in text or "psk" in text:
            return AgentError(
                f"{where} refused the secret (fingerprint {self.fingerprint}); check that "
                "--secret-file holds the secret the agent shows or was given"
            )
        return AgentError(f"{where}: {error.string}")

    def inventory(self) -> Inventory:
        h = nbd.NBD()
        self.connect(h, INVENTORY_EXPORT)
        try:
            size = h.get_size()
            if size > MAX_INVENTORY:
                raise AgentError(f"the agent at {self.address} sent an oversized inventory")
            data = h.pread(size, 0) if size else b""
        finally:
            h.shutdown()
        try:
            return Inventory.from_json(data)
        except SchemaError as e:
            raise AgentError(f"the agent at {self.address}: {e}") from None

    def open_disk(self, disk: str, *, own: bool = False) -> Any:
        """A read-only transfer endpoint on one of the agent's disks; with `own`,
        closing it ends this session too."""
        from p2v.transfer.endpoints.nbd import NbdEndpoint

        return NbdEndpoint(
            f"{SCHEME}{self.address}/{disk}",
            lambda h: self.connect(h, disk),
            writable=False,
            on_close=self.close if own else None,
        )

    @contextlib.contextmanager
    def local_proxy(self, socket: Path) -> Iterator[LocalProxy]:
        """The agent's disks on a local Unix socket, for programs that cannot do
        TLS-PSK themselves (QEMU's backing files, libguestfs): nbdkit's nbd plugin
        relays each connection to the agent over TLS-PSK, read-only. Export names
        are the agent's disk names. Connect once first (`inventory`) so that a wrong
        secret is explained here rather than as a QEMU error later."""
        command = [
            "nbdkit", "--exit-with-parent", "--foreground", "--readonly",
            "--unix", str(socket), "nbd",
            f"hostname={self.address.host}", f"port={self.address.port}",
            "dynamic-export=true", "tls=require", f"tls-psk={self._psk}",
            f"tls-username={PSK_IDENTITY}",
        ]  # fmt: skip
        socket.unlink(missing_ok=True)
        log = self._dir / "proxy.log"  # a file: a pipe nobody reads would block nbdkit
        with open(log, "w") as errors:
            proxy = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=errors)
        try:
            deadline = time.monotonic() + 15
            while not socket.exists():
                if proxy.poll() is not None or time.monotonic() > deadline:
                    error = log.read_text().strip() or "nbdkit did not start in time"
                    raise AgentError(f"cannot relay the agent's disks: {error}")
                time.sleep(0.05)
            yield LocalProxy(socket)
        finally:
            proxy.terminate()
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()
            socket.unlink(missing_ok=True)

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

    def uri(self, disk: str) -> str:
        return f"nbd+unix:///{disk}?socket={self.socket}"

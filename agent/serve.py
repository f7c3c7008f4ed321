"""Serve the inventory and the disks, read-only, to the holder of the secret.

nbdkit does the serving: its file plugin in directory mode offers every file of a
private directory as an export, so one TLS-PSK port carries the inventory (a file),
every disk (a symlink to its device) and, beside each disk, the map of the zeros
found on it so far (agent.zeros). nbdkit runs with --readonly, which opens
the devices read-only and refuses writes; on top of that each exported device is
marked read-only in the kernel while it is served, so nothing on this machine can
write to it by mistake either. The secret reaches nbdkit only as a file in a
directory that only root can read; it is never on a command line or in a log.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent import zeros
from agent.inventory.model import Inventory
from agent.protocol import INVENTORY_EXPORT, Address, ZeroMap, write_psk_file, zero_map_export

_BLKROSET = 0x125D
_BLKROGET = 0x125E
START_TIMEOUT = 15.0  # seconds for nbdkit to listen


class ServeError(Exception):
    pass


def exportable_disks(inventory: Inventory, names: list[str] | None) -> list[str]:
    """The disks to serve: the named ones, or every disk but the live medium and empty
    drives. Naming the live medium or an unknown disk is refused."""
    if names is None:
        return [d.name for d in inventory.disks if not d.live_medium and d.size_bytes > 0]
    for name in names:
        disk = inventory.disk(name)
        if disk is None:
            raise ServeError(f"{name}: no such disk")
        if disk.live_medium:
            raise ServeError(f"{name} holds the running agent (live medium); not exported")
    return names


def set_read_only(device: str, read_only: bool) -> bool:
    """Set the kernel's read-only flag of a block device; returns the previous one."""
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        previous = struct.unpack("i", fcntl.ioctl(fd, _BLKROGET, struct.pack("i", 0)))[0]
        fcntl.ioctl(fd, _BLKROSET, struct.pack("i", int(read_only)))
        return bool(previous)
    finally:
        os.close(fd)


@dataclass
class ExportServer:
    inventory: Inventory
    disks: list[str]  # kernel names
    key: str
    listen: Address
    on_event: Callable[[str], None] = print
    _dir: Path | None = None
    _proc: subprocess.Popen[bytes] | None = None
    _read_only_before: dict[str, bool] = field(default_factory=dict)
    _scanner: threading.Thread | None = None
    _stop_scan: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        if shutil.which("nbdkit") is None:
            raise ServeError("nbdkit is not installed; the agent serves disks through it")
        base = "/run" if os.access("/run", os.W_OK) else None
        self._dir = Path(tempfile.mkdtemp(prefix="p2v-agent-", dir=base))  # mode 0700
        try:
            self._prepare()
            self._spawn()
        except BaseException:
            self.stop()
            raise
        self._scanner = threading.Thread(target=self._scan, daemon=True)
        self._scanner.start()

    def _prepare(self) -> None:
        assert self._dir is not None
        exports = self._dir / "exports"
        exports.mkdir(mode=0o700)
        (exports / INVENTORY_EXPORT).write_text(self.inventory.to_json())
        for name in self.disks:
            device = f"/dev/{name}"
            self._read_only_before[device] = set_read_only(device, True)
            (exports / name).symlink_to(device)
            disk = self.inventory.disk(name)
            self._publish(name, ZeroMap(disk.size_bytes if disk else 0))
        write_psk_file(self._dir, self.key)

    def _spawn(self) -> None:
        assert self._dir is not None
        argv = [
            "nbdkit",
            "--foreground",
            "--exit-with-parent",
            "--readonly",
            "--tls=require",
            f"--tls-psk={self._dir / 'psk'}",
            f"--ipaddr={self.listen.host}",
            f"--port={self.listen.port}",
            f"--pidfile={self._dir / 'pid'}",  # written once nbdkit listens
            "file",
            f"dir={self._dir / 'exports'}",
        ]
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **self._gnutls_settings()},
        )
        errors: list[str] = []
        threading.Thread(target=self._relay, args=(errors,), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                time.sleep(0.1)  # let the relay read the last words
                detail = errors[-1] if errors else f"exit status {self._proc.returncode}"
                raise ServeError(f"cannot serve on {self.listen}: {detail}")
            if (self._dir / "pid").exists():
                return
            time.sleep(0.05)
        raise ServeError(f"nbdkit did not listen on {self.listen} within {START_TIMEOUT:.0f} s")

    def _scan(self) -> None:
        """Look for zeros on each served disk in turn, publishing what is found."""
        for name in self.disks:
            try:
                publish = functools.partial(self._publish, name)
                found = zeros.scan(f"/dev/{name}", publish, self._stop_scan)
            except OSError as e:
                self.on_event(f"{name}: not scanned for zeros: {e.strerror}")
                continue
            if self._stop_scan.is_set():
                return
            share = 100 * found.zero_bytes / max(found.size, 1)
            self.on_event(f"{name}: scanned, {share:.0f}% zeros (not sent over the network)")

    def _publish(self, name: str, found: ZeroMap) -> None:
        """Replace DISK.zeros at once: a client opening it reads one whole map."""
        directory = self._dir
        if directory is None or self._stop_scan.is_set():
            return
        partial = directory / f"{name}.zeros.new"  # not an export until renamed
        try:
            partial.write_text(found.to_json())
            partial.rename(directory / "exports" / zero_map_export(name))
        except OSError:
            pass  # stopping: the directory is going away

    def _gnutls_settings(self) -> dict[str, str]:
        """On a CPU with AES instructions, leave ChaCha20 out of the ciphers offered.

        GnuTLS here picks ChaCha20-Poly1305, which runs at a third of AES-GCM's speed
        on such CPUs and would make the TLS the slowest part of a copy. This is
        GnuTLS's own configuration file, read by this nbdkit only.
        """
        assert self._dir is not None
        if not cpu_has_aes():
            return {}
        config = self._dir / "gnutls.config"
        config.write_text("[overrides]\ntls-disabled-cipher = CHACHA20-POLY1305\n")
        return {"GNUTLS_SYSTEM_PRIORITY_FILE": str(config)}

    def _relay(self, errors: list[str]) -> None:
        """Turn nbdkit's messages into ones an operator can act on."""
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace").strip()
            errors.append(line)
            message = explain_server_message(line)
            if message:
                self.on_event(message)

    def wait(self) -> int:
        assert self._proc is not None
        return self._proc.wait()

    def stop(self) -> None:
        self._stop_scan.set()
        if self._scanner is not None:
            self._scanner.join(timeout=10)
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for device, was_read_only in self._read_only_before.items():
            with contextlib.suppress(OSError):
                set_read_only(device, was_read_only)
        self._read_only_before.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def cpu_has_aes() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " aes" in line for line in f)
    except OSError:
        return False


def explain_server_message(line: str) -> str | None:
    lowered = line.lower()
    if "gnutls_handshake" in lowered or "tls handshake" in lowered:
        return "refused a connection: TLS handshake failed (the client's secret is wrong?)"
    if "tls" in lowered and (
        "required" in lowered or "non-tls" in lowered or "starttls" in lowered
    ):
        return "refused a connection that did not use TLS with the secret"
    if "open:" in lowered and "no such file" in lowered:
        return f"a client asked for an export that is not served ({line.rsplit('open: ', 1)[-1]})"
    if "address already in use" in lowered:
        return f"the port is already in use: {line}"
    if "error" in lowered:
        return line.removeprefix("nbdkit: ")
    return None

"""Test guests on test hosts: `python -m tests.guests start|counter|stop`.

A test guest is the fixture image (`python -m tests.fixtures vmguest`) uploaded as the
volume NAME.qcow2 of the host's pool `default` and defined as the domain NAME. Its
console is read through the libvirt connection, so `counter` follows the guest to
whichever host it runs on. Every wait has a time limit; what went wrong names the
guest and the host, with the end of its console.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from p2v import accel
from p2v.errors import ComponentError, InputError
from p2v.host import virt
from p2v.host.virt import console as virt_console
from p2v.host.virt import storage
from p2v.host.virt.domainxml import DomainXml
from tests import hosts
from tests.fixtures import builder
from tests.fixtures.vmguest import PORT, Settings, console, records
from tests.guests.domain import GuestSpec

T = TypeVar("T")
POOL = "default"
START_TIMEOUT = 120.0
COUNTER_TIMEOUT = 5.0


class GuestError(ComponentError):
    """The guest did not come up, stopped, or says nothing on its console."""


def volume_name(name: str) -> str:
    return f"{name}.qcow2"


def settings_for(workload: str, ip: str | None, gw: str | None) -> Settings:
    """The guest's settings; an address without a prefix is on the test subnet (/24),
    whose gateway (this machine) it then uses unless told otherwise."""
    if ip is None:
        return Settings(workload, None, gw)
    try:
        iface = ipaddress.ip_interface(ip if "/" in ip else f"{ip}/{hosts.SUBNET.prefixlen}")
    except ValueError as error:
        raise InputError(f"--ip {ip}: {error}") from None
    if gw is None and iface.ip in hosts.SUBNET:
        gw = str(hosts.GATEWAY)
    return Settings(workload, str(iface), gw)


def start(
    uri: str,
    name: str,
    settings: Settings,
    memory_mib: int | None = None,
    timeout: float = START_TIMEOUT,
    boot: bool = True,
    uefi: bool = False,
    agent: bool = False,
) -> None:
    """Upload the image, define and start the guest, and return once it counts (or,
    `boot` False, leave it defined and shut off); `agent`: with the guest agent's
    channel, so that its qemu-ga runs. A guest that does not get there is
    removed again, with its volume."""
    image = builder.build("vmguest")

    def xml(disk: str, domain_type: str) -> str:
        memory = memory_mib or settings.memory_for(uefi)
        return GuestSpec(name, settings, memory, disk, domain_type, uefi, agent).to_xml()

    def ready(conn: Any, domain: Any) -> None:
        _wait_counting(conn, domain, uri, timeout)

    upload_and_start(uri, name, image, xml, ready if boot else None)


def upload_and_start(
    uri: str,
    name: str,
    image: Path,
    xml: Callable[[str, str], str],
    ready: Callable[[Any, Any], T] | None,
) -> T | None:
    """Upload `image` as the volume NAME.qcow2 of the host's pool, define the domain
    `xml(disk path, domain type)` describes, start it and return what `ready(conn,
    domain)` returns once it is up (`ready` None: left defined and shut off). A guest
    that does not get there is removed again, with its volume."""
    with virt.connection(uri) as conn:
        if virt.lookup(conn, name) is not None:
            raise InputError(f"{uri}: a domain named {name!r} exists; stop it first")
        pool = virt.pool(conn, POOL)
        if virt.volume(pool, volume_name(name)) is not None:
            raise InputError(f"{uri}: the pool {POOL} has a volume {volume_name(name)} already")
        vol = virt.create_volume(pool, volume_name(name), _virtual_size(image), "qcow2")
        try:
            storage.upload_file(conn, vol, str(image))
            domain = virt.define(conn, xml(storage.path(vol), accel.detect().libvirt_domain_type))
            try:
                if ready is None:
                    return None
                virt.start(domain)
                return ready(conn, domain)
            except BaseException:
                virt.destroy(domain)
                virt.undefine(domain)
                raise
        except BaseException:
            storage.delete_volume(vol)
            raise


def _wait_counting(conn: Any, domain: Any, uri: str, timeout: float) -> None:
    """Until the console shows two counter lines in a row."""

    def counting(text: str) -> bool:
        values = console.counters(text)
        return len(values) >= 2 and not console.gaps(values[-2:])

    name = domain.name()
    text = virt_console.read_console_until(
        conn, domain, lambda t: counting(t) or console.failure(t) is not None, timeout
    )
    if failed := console.failure(text):
        raise GuestError(f"{name} on {uri} failed: {failed}\n{_tail(text)}")
    if counting(text):
        return
    if virt.state(domain) != "running":
        raise GuestError(f"{name} on {uri} stopped while booting\n{_tail(text)}")
    raise GuestError(f"{name} on {uri}: no counter after {timeout:g} s\n{_tail(text)}")


def counter(uri: str, name: str, timeout: float = COUNTER_TIMEOUT) -> int:
    """The counter value the guest prints now, read from its console."""
    with virt.connection(uri) as conn:
        domain = virt.find(conn, name)
        if (now := virt.state(domain)) != "running":
            raise InputError(f"{name} on {uri} is {now}, not running")
        text = virt_console.read_console_until(
            conn,
            domain,
            lambda t: console.last_counter(t) is not None or console.failure(t) is not None,
            timeout,
        )
        value = console.last_counter(text)
        if value is not None:
            return value
        if failed := console.failure(text):
            raise GuestError(f"{name} on {uri} failed: {failed}")
        if (now := virt.state(domain)) != "running":
            raise GuestError(f"{name} on {uri} is {now} now\n{_tail(text)}")
        raise GuestError(
            f"{name} on {uri}: no counter line on its console within {timeout:g} s\n{_tail(text)}"
        )


def stop(uri: str, name: str) -> None:
    """Destroy and undefine the guest and delete its volume; either may be gone already."""
    with virt.connection(uri) as conn:
        domain = virt.lookup(conn, name)
        pool = virt.pool(conn, POOL)
        vol = virt.volume(pool, volume_name(name))
        if domain is None and vol is None:
            raise InputError(f"{uri}: no test guest {name!r} (no domain, no volume)")
        if domain is not None:
            virt.destroy(domain)
            virt.undefine(domain)
            if virt.lookup(conn, name) is not None:
                raise ComponentError(f"{uri}: {name} could not be removed")
        if vol is not None:
            storage.delete_volume(vol)
            if virt.volume(pool, volume_name(name)) is not None:
                raise ComponentError(f"{uri}: the volume {volume_name(name)} could not be deleted")


def disk_records(uri: str, name: str) -> str:
    """The records file on the disk of a guest that is shut off (a running guest's
    disk is still being written: stop it with virt.destroy first)."""
    with virt.connection(uri) as conn:
        domain = virt.lookup(conn, name)
        if domain is not None and (now := virt.state(domain)) != "shut off":
            raise InputError(f"{name} on {uri} is {now}; its disk can be read once it is shut off")
        pool = virt.pool(conn, POOL)
        storage.refresh(pool)
        vol = virt.volume(pool, volume_name(name))
        if domain is not None:  # the disk it writes now: an overlay, after a snapshot
            vol = storage.volume_at(conn, DomainXml.parse(domain.XMLDesc()).disks[0].source)
        if vol is None:
            raise InputError(f"{uri}: no volume {volume_name(name)} in the pool {POOL}")
        flat = None
        if storage.backing(vol):  # one file, made by the host's libvirt (qemu-img convert)
            flat = storage.durable_clone(vol, f".{name}.records.qcow2")
        try:
            with tempfile.TemporaryDirectory(prefix="p2v-guest-disk-") as tmp:
                copy = Path(tmp) / volume_name(name)
                storage.download_file(conn, flat or vol, str(copy))
                return records.read_from_image(copy)
        finally:
            if flat is not None:
                storage.delete_volume(flat)


def read_counters(sock: socket.socket, seconds: float) -> list[int]:
    """The counter values a client of the guest's TCP service (port 7777) got within
    `seconds`."""
    data = b""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    return console.counters(data.decode())


def _virtual_size(image: Path) -> int:
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(image)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    return int(json.loads(info)["virtual-size"])


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])


class CounterWatch:
    """A client of the guest's TCP counter (port 7777) that reads in a thread, noting
    when each value arrived: across a migration it shows the longest pause the guest's
    clients saw, any value lost or repeated, and whether the connection survived."""

    def __init__(self, ip: str, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((ip, PORT), timeout=timeout)
        self.seen: list[tuple[float, int]] = []  # (arrival, value)
        self.closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self.sock.settimeout(0.5)
        pending = b""
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                return
            now = time.monotonic()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                values = console.counters(line.decode() + "\n")
                self.seen.extend((now, value) for value in values)

    def wait_for_more(self, count: int, timeout: float) -> bool:
        """Whether `count` more values arrive within `timeout` s."""
        goal = len(self.seen) + count
        deadline = time.monotonic() + timeout
        while len(self.seen) < goal and time.monotonic() < deadline and not self.closed:
            time.sleep(0.05)
        return len(self.seen) >= goal

    @property
    def values(self) -> list[int]:
        return [value for _, value in self.seen]

    @property
    def longest_gap(self) -> float:
        return self.gap_since()

    @property
    def lost(self) -> list[str]:
        return self.lost_since()

    def gap_since(self, since: float = 0.0) -> float:
        """Seconds: the longest wait between two values that came from `since` (a
        time.monotonic() value) on."""
        times = [at for at, _ in self.seen if at >= since]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)

    def lost_since(self, since: float = 0.0) -> list[str]:
        """Where the values that came from `since` on went backwards or skipped."""
        return console.gaps([value for at, value in self.seen if at >= since])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def __enter__(self) -> CounterWatch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def where(uris: list[str], name: str) -> str | None:
    """Which of these hosts has the guest defined (running or not)."""
    for uri in uris:
        with virt.connection(uri) as conn:
            if virt.lookup(conn, name) is not None:
                return uri
    return None


def stop_anywhere(uris: list[str], name: str) -> None:
    """Remove the guest and its volume from every host that has either."""
    for uri in uris:
        with virt.connection(uri) as conn:
            has = virt.lookup(conn, name) is not None
            has = has or virt.volume(virt.pool(conn, POOL), volume_name(name)) is not None
        if has:
            stop(uri, name)

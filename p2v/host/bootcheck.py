"""Start the converted guest headless and read its serial console until it has booted
(a login prompt), within a time limit."""

from __future__ import annotations

import re
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What a booted Linux prints on its serial console; the harness's fixtures and its
# test guest also print their own line.
BOOTED = re.compile(
    r"^(?P<line>(?:\S.*\s)?\S+ login:|P2V-TEST-BOOTED .*|P2V-GUEST-READY .*)$", re.MULTILINE
)
# What a Linux that cannot find or mount its root prints before its rescue shell:
# initramfs-tools, then dracut (its initqueue gives up, or systemd's wait for the
# root device does), then the kernel itself.
STUCK = re.compile(
    r"Gave up waiting for root|ALERT! .* does not exist|Failed to mount .* as root|^\(initramfs\)"
    r"|dracut-initqueue\S*: timeout, still waiting|Timed out waiting for device \S*dev-\S*"
    r"|Warning: /dev/\S+ does not exist|Kernel panic",
    re.MULTILINE,
)


# What a Linux prints when its boot waited for something that never came: a booted
# guest that shows one is slow to boot every time, and why is worth saying.
WAITED = re.compile(
    r"Gave up waiting for suspend/resume device|A start job is running for [^(\r\n]*"
)


@dataclass
class BootCheck:
    booted: bool
    line: str  # the boot line, or why not
    seconds: float
    waited: list[str] = field(default_factory=list)  # waits the console shows, once each


def watch_console(log: Path, timeout: float, alive: Any) -> BootCheck:
    """Poll the console log until the guest has booted, is stuck, dies or time is up."""
    return watch(lambda: log.read_text(errors="replace") if log.exists() else "", timeout, alive)


def watch(read: Callable[[], str], timeout: float, alive: Any) -> BootCheck:
    """Poll the console's text until the guest has booted, is stuck, dies or time is up."""
    start = time.monotonic()
    while True:
        text = read()
        if found := BOOTED.search(text):
            waited = list(dict.fromkeys(w.strip() for w in WAITED.findall(text)))
            return BootCheck(True, found["line"].strip(), time.monotonic() - start, waited)
        if stuck := STUCK.search(text):
            return BootCheck(False, f"stuck: {stuck[0]}", time.monotonic() - start)
        if not alive():
            return BootCheck(False, "the guest stopped", time.monotonic() - start)
        if time.monotonic() - start > timeout:
            return BootCheck(False, f"no login prompt after {timeout:.0f} s", timeout)
        time.sleep(1)


def verify_boot(conn: Any, xml: str, console_log: Path, timeout: float) -> BootCheck:
    """Boot a transient copy of the domain (it goes away with this check), under a
    name of its own: a defined domain of the same name must not stop the check."""
    from p2v.host import virt

    console_log.unlink(missing_ok=True)
    domain = virt.start_transient(conn, _renamed(xml))
    try:
        return watch_console(console_log, timeout, domain.isActive)
    finally:
        virt.destroy(domain)


def _renamed(xml: str) -> str:
    root = ET.fromstring(xml)
    name = root.find("name")
    assert name is not None and name.text
    name.text = f"{name.text}-p2v-boot-check-{secrets.token_hex(3)}"
    for uuid in root.findall("uuid"):
        root.remove(uuid)
    return ET.tostring(root, encoding="unicode")

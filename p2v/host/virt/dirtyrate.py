"""How fast a running domain dirties its memory, measured by QEMU through libvirt:
what a live migration's pre-copy has to outrun."""

from __future__ import annotations

import time
from typing import Any

from p2v.errors import ComponentError
from p2v.host.virt.connection import failing_as, libvirt_module


def dirty_rate(domain: Any, seconds: int = 1, timeout: float = 30, poll: float = 0.2) -> int:
    """MB/s of memory the domain dirtied while QEMU watched it for `seconds`.

    QEMU samples pages (its default mode): a page written twice in the period counts
    once, so a guest that rewrites a small buffer shows at most its size per period.
    """
    libvirt = libvirt_module()
    name = domain.name()
    with failing_as(f", measuring how fast {name} dirties memory"):
        domain.startDirtyRateCalc(seconds, 0)
        conn = domain.connect()
        deadline = time.monotonic() + seconds + timeout
        while True:
            time.sleep(poll)
            [(_, stats)] = conn.domainListGetStats([domain], libvirt.VIR_DOMAIN_STATS_DIRTYRATE)
            if stats.get("dirtyrate.calc_status") == libvirt.VIR_DOMAIN_DIRTYRATE_MEASURED:
                return int(stats["dirtyrate.megabytes_per_second"])
            if time.monotonic() > deadline:
                raise ComponentError(
                    f"libvirt: {name}'s dirty rate was not measured within {seconds + timeout:g} s"
                )

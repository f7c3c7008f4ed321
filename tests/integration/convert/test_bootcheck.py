"""The boot check of a files-only conversion runs a transient copy of the domain in
libvirt: a domain of the same name already defined there (an earlier `--target kvm`
conversion, `make demo`) must neither stop the check nor be touched by it."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

import libvirt

from imagebuilder.domain import Placement, domain_xml
from imagebuilder.profile import HardwareProfile
from p2v import accel
from p2v.host import virt
from p2v.host.bootcheck import verify_boot


def test_a_defined_domain_of_the_same_name_does_not_stop_the_check() -> None:
    name = f"p2v-test-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        Path(tmp).chmod(0o755)  # libvirt's QEMU user writes the console log here
        log = Path(tmp) / "console.log"
        placement = Placement(accel.detect().libvirt_domain_type, "user", str(log))
        # No disk: nothing boots, the check runs out of time; what matters is that
        # it ran at all.
        xml = domain_xml(HardwareProfile(name=name, firmware="bios", memory_mib=128), placement)
        conn = virt.connect()
        try:
            defined = conn.defineXML(xml)
            try:
                check = verify_boot(conn, xml, log, timeout=3)
                assert not check.booted and "no login prompt" in check.line
                assert not defined.isActive()
                assert conn.lookupByName(name).UUIDString() == defined.UUIDString()
                running = [d.name() for d in conn.listAllDomains() if d.isActive()]
                assert not [n for n in running if n.startswith(name)], "the copy is gone"
            finally:
                defined.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        finally:
            conn.close()

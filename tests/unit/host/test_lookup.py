"""Looking a domain up by UUID fails closed: only libvirt's "no such domain" means
gone (code that deletes a source relies on it), on libvirt's own test driver."""

from __future__ import annotations

import pytest

from p2v.errors import ComponentError
from p2v.host import virt

MISSING = "00000000-0000-4000-8000-000000000001"


def test_only_no_such_domain_reads_as_gone() -> None:
    with virt.connection("test:///default") as conn:
        known = conn.listAllDomains()[0].UUIDString()
        assert virt.lookup_uuid(conn, known).UUIDString() == known
        assert virt.lookup_uuid(conn, MISSING) is None
        with pytest.raises(ComponentError):  # a malformed UUID is no "gone"
            virt.lookup_uuid(conn, "not-a-uuid")
    # A connection that no longer answers is an error, not "gone".
    conn = virt.connect("test:///default", 5)
    conn.close()
    with pytest.raises(ComponentError):
        virt.lookup_uuid(conn, MISSING)

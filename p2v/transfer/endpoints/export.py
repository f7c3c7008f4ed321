"""A running domain's disks as libvirt's pull-mode backup exports them over NBD:
where the export listens, and a read-only endpoint on one disk of it. Shared by
backups (which read it into their catalog) and live clones (which read it once)."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from typing import Any

import nbd

from p2v.errors import InputError
from p2v.host import virt
from p2v.host.virt import backups
from p2v.transfer.endpoints.handshake import connect_within
from p2v.transfer.endpoints.nbd import NbdEndpoint

DEFAULT_NBD_PORT = 10809


def listen_at(uri: str, conn: Any, nbd_port: int = DEFAULT_NBD_PORT) -> backups.Export:
    """Where libvirt's export listens: for a VM on this machine a unix socket in a
    directory only QEMU's user (which makes the socket) and root can enter; for another
    host its address, with TLS."""
    if uri in virt.LOCAL_URIS:
        directory = tempfile.mkdtemp(prefix="p2v-backup-")
        owner = backups.qemu_owner(conn)
        if owner is not None and os.geteuid() == 0:
            os.chown(directory, *owner)
        return backups.Export(socket=os.path.join(directory, "nbd.sock"))
    host = urllib.parse.urlsplit(uri).hostname
    if not host:
        raise InputError(f"{uri} names no host to read the backup from")
    return backups.Export(address=host, port=nbd_port)


def check_reach(uri: str, tls_certs: str | None, what: str) -> None:
    """A remote host's export is read over TCP with TLS, both sides certified: the
    certificates are there."""
    if uri in virt.LOCAL_URIS:
        return
    if not tls_certs:
        raise InputError(
            f"{what} from {uri} is read over the network with TLS: give --tls-certs DIR "
            "(ca-cert.pem, client-cert.pem, client-key.pem; the host's qemu.conf names its "
            "own in backup_tls_x509_cert_dir)"
        )
    missing = [f for f in ("ca-cert.pem", "client-cert.pem", "client-key.pem")
               if not os.path.isfile(os.path.join(tls_certs, f))]  # fmt: skip
    if missing:
        raise InputError(f"--tls-certs {tls_certs} lacks {', '.join(missing)}")


def drop(export: backups.Export) -> None:
    """The socket's directory, once the export is ended."""
    if export.socket:
        shutil.rmtree(os.path.dirname(export.socket), ignore_errors=True)


def reader(
    export: backups.Export,
    target: str,
    label: str,
    tls_certs: str | None,
    connect_timeout: float,
    bitmap: str | None = None,
) -> NbdEndpoint:
    """Disk `target` of the export, read-only; over TCP only with TLS, the peer's
    certificate checked against `tls_certs` (CA and client certificate)."""

    def connect(h: Any) -> None:
        h.set_export_name(target)
        if export.socket:
            connect_within(h, lambda h: h.aio_connect_unix(export.socket), connect_timeout)
            return
        h.set_tls(nbd.TLS_REQUIRE)
        h.set_tls_certificates(tls_certs)
        h.set_tls_verify_peer(True)
        connect_within(h, lambda h: h.aio_connect_tcp(export.address, str(export.port)),
                       connect_timeout)  # fmt: skip

    where = export.socket or f"{export.address}:{export.port}"
    return NbdEndpoint(f"{label}'s {target} (backup export {where})", connect,
                       writable=False, bitmap=bitmap)  # fmt: skip
